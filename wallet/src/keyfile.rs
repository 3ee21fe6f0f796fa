//! btcli's wallet layout: a hotkey lives at `<wallet path>/<wallet name>/hotkeys/<hotkey name>`
//! as an unencrypted JSON keyfile, which `btcli` and the bittensor SDK read and write:
//!
//! ```json
//! {"accountId": "0x<public key>", "publicKey": "0x<public key>",
//!  "privateKey": "0x<64-byte schnorrkel secret key>", "secretPhrase": "<mnemonic or null>",
//!  "secretSeed": "0x<32-byte mini secret>", "ss58Address": "<SS58, prefix 42>"}
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Result, WalletError};
use crate::keypair::Keypair;

const HOTKEY_FILE: &str = "hotkey file";

/// A btcli wallet: the directory `path/name`, holding `hotkeys/` (and, for veribench,
/// `delegations/`). Coldkeys are not handled here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    /// The directory of all wallets, btcli's `--wallet.path` (default [`Wallet::default_path`]).
    pub path: PathBuf,
    /// The wallet's name, btcli's `--wallet.name`.
    pub name: String,
}

impl Wallet {
    /// The wallet `name` under `path`. A leading `~` in `path` is expanded to `$HOME`, as btcli
    /// does; `name` must be a plain file name.
    pub fn new(path: impl AsRef<Path>, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        validate_name("wallet", &name)?;
        Ok(Self { path: expand_home(path.as_ref()), name })
    }

    /// btcli's default wallet directory, `~/.bittensor/wallets` (`~` being `$HOME`; when `HOME`
    /// is unset, the path is relative to the working directory).
    pub fn default_path() -> PathBuf {
        expand_home(Path::new("~/.bittensor/wallets"))
    }

    /// The wallet's own directory, `path/name`.
    pub fn dir(&self) -> Result<PathBuf> {
        validate_name("wallet", &self.name)?;
        Ok(self.path.join(&self.name))
    }

    /// Where the hotkey `hotkey` of this wallet lives: `path/name/hotkeys/hotkey`.
    pub fn hotkey_path(&self, hotkey: &str) -> Result<PathBuf> {
        validate_name("hotkey", hotkey)?;
        Ok(self.dir()?.join("hotkeys").join(hotkey))
    }

    /// Generates a new hotkey and writes it as `hotkey`; its mnemonic is in
    /// [`Keypair::phrase`], for the operator to write down. Refuses to replace an existing
    /// hotkey unless `overwrite`.
    pub fn create_hotkey(&self, hotkey: &str, overwrite: bool) -> Result<Keypair> {
        let path = self.hotkey_path(hotkey)?;
        if !overwrite && exists(&path)? {
            return Err(WalletError::AlreadyExists { path });
        }
        let (keypair, _phrase) = Keypair::generate();
        self.save_hotkey(hotkey, &keypair, overwrite)?;
        Ok(keypair)
    }

    /// Writes `keypair` as the hotkey `hotkey` (e.g. one restored with
    /// [`Keypair::from_phrase`]), readable by btcli. The file is created with mode 0600,
    /// atomically: a crash leaves the old file or the new one, never a torn one. Refuses to
    /// replace an existing hotkey unless `overwrite`.
    pub fn save_hotkey(&self, hotkey: &str, keypair: &Keypair, overwrite: bool) -> Result<()> {
        let path = self.hotkey_path(hotkey)?;
        if !overwrite && exists(&path)? {
            return Err(WalletError::AlreadyExists { path });
        }
        let public = format!("0x{}", keypair.public());
        let file = KeyfileOut {
            account_id: &public,
            public_key: &public,
            private_key: &Zeroizing::new(format!("0x{}", hex::encode(*keypair.secret_key_bytes()))),
            secret_phrase: keypair.phrase(),
            secret_seed: &Zeroizing::new(format!("0x{}", hex::encode(keypair.seed()))),
            ss58_address: &keypair.ss58_address(),
        };
        let json = Zeroizing::new(serde_json::to_vec(&file).map_err(|e| WalletError::Io {
            action: "serialise hotkey file",
            path: path.clone(),
            source: io::Error::other(e),
        })?);
        write_atomically(&path, &json, 0o600, "write hotkey file")
    }

    /// Reads the hotkey `hotkey`. The key is derived from the file's `secretSeed` and checked
    /// against its `publicKey`; the returned keypair does not carry the mnemonic.
    pub fn load_hotkey(&self, hotkey: &str) -> Result<Keypair> {
        let path = self.hotkey_path(hotkey)?;
        let data = Zeroizing::new(read_file(&path, HOTKEY_FILE, "read hotkey file")?);
        parse_keyfile(&path, &data)
    }
}

/// A keyfile as written; field order as btcli's `Keypair` lists them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyfileOut<'a> {
    account_id: &'a str,
    public_key: &'a str,
    private_key: &'a str,
    secret_phrase: Option<&'a str>,
    secret_seed: &'a str,
    ss58_address: &'a str,
}

/// The fields of a keyfile this crate reads; others (`privateKey`, `secretPhrase`, …) are
/// ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyfileIn {
    public_key: Option<String>,
    secret_seed: Option<String>,
}

/// What btcli's encrypted keyfiles start with: NaCl secretbox, Ansible Vault, legacy Fernet.
const ENCRYPTED_PREFIXES: [&[u8]; 4] = [b"$NACL", b"$BTCLI", b"$ANSIBLE_VAULT", b"gAAAAA"];

fn parse_keyfile(path: &Path, data: &[u8]) -> Result<Keypair> {
    let malformed =
        |reason: String| WalletError::Malformed { what: HOTKEY_FILE, path: path.into(), reason };
    let trimmed = data.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(malformed("the file is empty".into()));
    }
    // Anything that is not a JSON object is taken for an encrypted keyfile: btcli writes
    // nothing else.
    if ENCRYPTED_PREFIXES.iter().any(|p| trimmed.starts_with(p)) || !trimmed.starts_with(b"{") {
        return Err(WalletError::Encrypted { path: path.into() });
    }
    let file: KeyfileIn = serde_json::from_slice(data).map_err(|source| WalletError::BadJson {
        what: HOTKEY_FILE,
        path: path.into(),
        source,
    })?;

    let seed = file.secret_seed.map(Zeroizing::new).ok_or_else(|| {
        malformed("it has no secretSeed (a public-only keyfile cannot sign)".into())
    })?;
    let seed = Zeroizing::new(
        parse_hex::<32>(&seed)
            .ok_or_else(|| malformed("secretSeed is not 32 bytes of hex".into()))?,
    );
    let keypair = Keypair::from_seed(&seed);

    let stored = file.public_key.ok_or_else(|| malformed("it has no publicKey".into()))?;
    let stored = parse_hex::<32>(&stored)
        .ok_or_else(|| malformed(format!("publicKey {stored:?} is not 32 bytes of hex")))?;
    if stored != keypair.public().0 {
        return Err(WalletError::PublicKeyMismatch {
            path: path.into(),
            stored: hex::encode(stored),
            derived: keypair.public().to_string(),
        });
    }
    Ok(keypair)
}

/// Parses `N` bytes of hex, with or without a `0x` prefix.
pub(crate) fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Checks that `name` is one plain path component: not empty, no separator, no `..`.
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains(['/', '\\']) {
        "it contains a path separator"
    } else if name.contains("..") || name == "." {
        "it contains `..` or is `.`"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(WalletError::InvalidName { what, name: name.into(), reason })
}

/// Replaces a leading `~` (alone or followed by `/`) with `$HOME`.
fn expand_home(path: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        (Ok(rest), None) => rest.to_path_buf(),
        (Err(_), _) => path.to_path_buf(),
    }
}

/// Whether anything (even a dangling symlink) is at `path`.
fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(WalletError::Io { action: "inspect", path: path.into(), source }),
    }
}

/// Reads a whole file, telling a missing file apart from other failures.
pub(crate) fn read_file(path: &Path, what: &'static str, action: &'static str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => WalletError::NotFound { what, path: path.into() },
        _ => WalletError::Io { action, path: path.into(), source },
    })
}

/// Writes `data` to `path` through a temporary file in the same directory, renamed over `path`
/// once complete and synced. Creates missing parent directories (mode 0700 on unix). `mode` is
/// the new file's unix permissions; `action` names the write in errors.
pub(crate) fn write_atomically(
    path: &Path,
    data: &[u8],
    mode: u32,
    action: &'static str,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| WalletError::Io { action, path, source }
    };
    create_private_dirs(dir).map_err(io_err("create directory", dir))?;

    let file_name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp =
        dir.join(format!(".{file_name}.tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let written = (|| {
        let mut file = open_new(&tmp, mode)?;
        file.write_all(data)?;
        file.sync_all()
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(WalletError::Io { action, path: tmp, source });
    }
    if let Err(source) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(WalletError::Io { action: "replace", path: path.into(), source });
    }
    // Make the rename itself durable; failing that is not worth failing the write for.
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(unix)]
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<fs::File> {
    fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain_components() {
        for bad in ["", "a/b", "a\\b", "..", "../x", "x..", ".", "nul\0"] {
            let err = validate_name("hotkey", bad).expect_err(bad);
            assert!(err.to_string().starts_with("invalid hotkey name"), "{err}");
        }
        for good in ["default", "miner-1", "my_hotkey", ".hidden", "a.b"] {
            validate_name("hotkey", good).expect(good);
        }
        assert!(Wallet::new("/w", "a/b").is_err());
        let wallet = Wallet { path: "/w".into(), name: "..".into() };
        assert!(wallet.hotkey_path("default").is_err(), "a bad name set directly is caught");
    }

    #[test]
    fn paths_follow_btcli_layout() {
        let wallet = Wallet::new("/w", "miner").expect("valid");
        assert_eq!(
            wallet.hotkey_path("default").expect("valid"),
            Path::new("/w/miner/hotkeys/default")
        );
        assert!(wallet.hotkey_path("../coldkey").is_err());
    }

    #[test]
    fn tilde_expands_to_home() {
        let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else { return };
        let home = PathBuf::from(home);
        assert_eq!(Wallet::default_path(), home.join(".bittensor/wallets"));
        assert_eq!(expand_home(Path::new("~")), home);
        assert_eq!(expand_home(Path::new("/abs/~")), Path::new("/abs/~"));
        assert_eq!(expand_home(Path::new("~user/x")), Path::new("~user/x"));
    }

    #[test]
    fn hex_fields_accept_an_optional_prefix() {
        assert_eq!(parse_hex::<2>("0xabcd"), Some([0xab, 0xcd]));
        assert_eq!(parse_hex::<2>("ABCD"), Some([0xab, 0xcd]));
        assert_eq!(parse_hex::<2>("0xabc"), None);
        assert_eq!(parse_hex::<2>("0xabcdef"), None);
        assert_eq!(parse_hex::<2>("zzzz"), None);
    }
}
