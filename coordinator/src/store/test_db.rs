//! Fresh test databases for every test that needs a store: a SQLite file in a temp dir, or a
//! PostgreSQL database (`CREATE DATABASE vb_test_<random>` on the server at
//! `VERIBENCH_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/`, dropped afterwards
//! even when the test fails), so tests run in parallel. Used by the store's and the status
//! pages' tests.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AnyConnection, Connection};

use super::{DbKind, Store};

/// Which database a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server, ending in `/` (a database name is appended).
fn postgres_base() -> String {
    let mut base = std::env::var("VERIBENCH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/".to_owned());
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

/// A database name no other test (or test run) uses.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("vb_test_{:016x}", h.finish())
}

/// Runs one statement on the server's `postgres` database.
async fn postgres_admin(sql: &str) {
    sqlx::any::install_default_drivers();
    let url = format!("{}postgres", postgres_base());
    let mut conn = AnyConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable: {e}"));
    sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = conn.close().await;
}

/// Drops a PostgreSQL test database when the test ends, passed or not.
#[derive(Debug)]
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0);
        // Drop may run inside the test's runtime: use a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(postgres_admin(&sql)))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.0);
        }
    }
}

/// A fresh, empty database that [`TestDb::open`] can connect to any number of times; it is
/// removed when this is dropped.
#[derive(Debug)]
pub(crate) struct TestDb {
    /// The database URL, for [`Store::connect`].
    pub(crate) url: String,
    /// Which database it is.
    pub(crate) backend: Backend,
    _dir: Option<tempfile::TempDir>,
    _drop: Option<DropDatabase>,
}

impl TestDb {
    pub(crate) async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                // A missing sub-directory: `connect` creates it.
                let path = dir.path().join("data").join("coordinator.db");
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    backend,
                    _dir: Some(dir),
                    _drop: None,
                }
            }
            Backend::Postgres => {
                let name = unique_name();
                postgres_admin(&format!("CREATE DATABASE {name}")).await;
                TestDb {
                    url: format!("{}{name}", postgres_base()),
                    backend,
                    _dir: None,
                    _drop: Some(DropDatabase(name)),
                }
            }
        }
    }

    /// A store over this database, checked to be of the expected kind.
    pub(crate) async fn open(&self) -> Store {
        let store = Store::connect(&self.url).await.expect("connect");
        let expected = match self.backend {
            Backend::Sqlite => DbKind::Sqlite,
            Backend::Postgres => DbKind::Postgres,
        };
        assert_eq!(store.kind(), expected);
        store
    }
}

/// Runs each scenario `async fn name(Backend) -> R` of the calling module as the tests
/// `sqlite::<name>` and `postgres::<name>`, returning `R` (written `super::R`, or `()`).
macro_rules! on_both_databases {
    ($ret:ty; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $ret {
                    super::$name($crate::store::test_db::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> $ret {
                    super::$name($crate::store::test_db::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_databases;
