//! External proof systems: batches are files in a directory, and proofs are checked by a
//! configured command (a zk circuit's verifier, say). The command runs without a shell, with the
//! batch and the proof as files, a timeout (after which it is killed) and a cap on what it may
//! print; its exit status is the verdict.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::config::ConfigError;

/// Largest batch file of an external system (it is stored in the database and served).
pub const MAX_BATCH_FILE_BYTES: u64 = 1 << 20;

/// `[[market.systems]]`: one external proof system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSystem {
    /// Its name (not `matmul`), given to `market add-batches --system`.
    pub name: String,
    /// Where its batch files are; `add-batches --system NAME` queues every file there.
    pub batches_dir: PathBuf,
    /// The verifier: program and arguments, no shell. `{batch}` and `{proof}` are replaced by
    /// the paths of files holding the batch and the decoded proof.
    pub verifier: Vec<String>,
    /// Seconds the verifier may run before it is killed (and the proof refused).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Bytes of its output kept for the log; more is read and dropped.
    #[serde(default = "default_output")]
    pub max_output_bytes: usize,
    /// Largest decoded proof.
    #[serde(default = "default_proof")]
    pub max_proof_bytes: usize,
    /// Operations one batch stands for (for prices per tera-operation).
    #[serde(default)]
    pub ops_per_batch: f64,
}

fn default_timeout() -> f64 {
    60.0
}
fn default_output() -> usize {
    64 << 10
}
fn default_proof() -> usize {
    16 << 20
}

impl ExternalSystem {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |m: String| Err(ConfigError::Invalid(format!("market.systems {:?}: {m}", self.name)));
        if self.name.is_empty() || self.name == super::MATMUL {
            return bad("a name other than `matmul` is needed".into());
        }
        if self.verifier.is_empty() {
            return bad("verifier needs a program".into());
        }
        if self.timeout_secs.is_nan() || self.timeout_secs <= 0.0 || self.max_proof_bytes == 0 {
            return bad("timeout_secs and max_proof_bytes must be positive".into());
        }
        if !(self.ops_per_batch >= 0.0 && self.ops_per_batch.is_finite()) {
            return bad("ops_per_batch must be a non-negative number".into());
        }
        Ok(())
    }

    /// Runs the verifier on `batch` and `proof`: Ok when it exits 0, the refusal reason
    /// otherwise (`verifier_refused`, `verifier_timeout`, `verifier_failed`).
    pub async fn verify(&self, batch: &[u8], proof: &[u8]) -> Result<(), &'static str> {
        if proof.len() > self.max_proof_bytes {
            return Err("proof_too_long");
        }
        let dir = tempfile::tempdir().map_err(|_| "verifier_failed")?;
        let (batch_path, proof_path) = (dir.path().join("batch"), dir.path().join("proof"));
        tokio::fs::write(&batch_path, batch).await.map_err(|_| "verifier_failed")?;
        tokio::fs::write(&proof_path, proof).await.map_err(|_| "verifier_failed")?;
        let arg = |a: &String| {
            a.replace("{batch}", &batch_path.to_string_lossy())
                .replace("{proof}", &proof_path.to_string_lossy())
        };
        let mut command = tokio::process::Command::new(arg(&self.verifier[0]));
        command
            .args(self.verifier[1..].iter().map(arg))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            tracing::error!(system = %self.name, error = %e, "market: cannot start the verifier");
            "verifier_failed"
        })?;
        let cap = self.max_output_bytes;
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s, cap)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s, cap)));
        let limit = Duration::from_secs_f64(self.timeout_secs);
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => return Err("verifier_failed"),
            Err(_) => {
                let _ = child.kill().await;
                tracing::warn!(system = %self.name, ?limit, "market: verifier killed at its timeout");
                return Err("verifier_timeout");
            }
        };
        let mut output = String::new();
        for task in [stdout, stderr].into_iter().flatten() {
            if let Ok(bytes) = task.await {
                output.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        if status.success() {
            Ok(())
        } else {
            tracing::info!(system = %self.name, %status, output = %output.trim(), "market: proof refused by the verifier");
            Err("verifier_refused")
        }
    }
}

/// Reads all of `r`, keeping the first `cap` bytes (the rest is read and dropped, so a chatty
/// verifier neither blocks on a full pipe nor grows memory).
async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// Batches of external system `name` from every regular UTF-8 file of `dir` of at most
/// [`MAX_BATCH_FILE_BYTES`] (others are skipped with a warning), each standing for `ops`
/// operations, with fresh request ids and unguessable paths.
pub fn queue_dir(
    name: &str,
    dir: &std::path::Path,
    ops: f64,
) -> std::io::Result<Vec<crate::store::NewBatch>> {
    let mut batches = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let meta = entry.metadata()?;
        if !meta.is_file() || meta.len() > MAX_BATCH_FILE_BYTES {
            tracing::warn!(file = %entry.path().display(), "skipped: not a regular file of at most 1 MiB");
            continue;
        }
        let Ok(descriptor) = String::from_utf8(std::fs::read(entry.path())?) else {
            tracing::warn!(file = %entry.path().display(), "skipped: not UTF-8");
            continue;
        };
        batches.push(crate::store::NewBatch {
            request_id: rand::random::<u64>() >> 1,
            token: super::new_token(),
            system: name.to_owned(),
            descriptor,
            ops: if ops.is_finite() && ops >= 0.0 { ops } else { 0.0 },
        });
    }
    Ok(batches)
}
