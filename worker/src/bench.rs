//! `veribench-worker bench`: one challenge end to end on one backend, timed per phase and checked
//! by the protocol verifier exactly as a coordinator would check it.

use std::time::{Duration, Instant};

use serde::Serialize;
use veribench_kernels::{Backend, BackendError, run_challenge};
use veribench_protocol::{
    Challenge, ChallengeId, Mode, Seed, Shape, UnixMillis, Verdict, sample_rows, verify_openings,
};

/// What `bench --json` prints: exactly these keys.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Backend family.
    pub backend: String,
    /// Challenge mode.
    pub mode: String,
    /// Columns of C (and of B).
    pub n: u32,
    /// Rows of C (and of A): the Merkle leaves.
    pub m: u32,
    /// Inner dimension.
    pub k: u32,
    /// Generating A and B.
    pub generate_ms: f64,
    /// The multiply.
    pub gemm_ms: f64,
    /// Hashing rows to leaves.
    pub hash_ms: f64,
    /// Building the Merkle tree.
    pub merkle_ms: f64,
    /// Sum of the four phases.
    pub total_ms: f64,
    /// 2·m·k·n over `gemm_ms` (GOP/s for int8).
    pub gflops: f64,
    /// (generate + hash + merkle) / total, in percent.
    pub overhead_pct: f64,
    /// The protocol verifier's verdict on sampled openings.
    pub verified: bool,
    /// The protocol verifier's time on the sampled openings (a coordinator's cost, not part of
    /// the worker's work or of `total_ms`).
    pub verify_ms: f64,
    /// CUDA only: the bare cuBLAS GEMM of the same mode and size (best of several runs), so the
    /// challenge's overhead can be read off directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bare_gemm_ms: Option<f64>,
    /// CUDA only: bare GEMM time / challenge GEMM phase, in percent (target ≥ 95).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemm_vs_bare_pct: Option<f64>,
    /// CUDA only: (challenge total − bare GEMM) / bare GEMM, in percent (target ≤ 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_vs_bare_pct: Option<f64>,
}

/// Bench outcome with what the JSON leaves out.
#[derive(Clone, Debug)]
pub struct BenchOutcome {
    /// The printed report.
    pub report: BenchReport,
    /// The verdict in full.
    pub verdict: Verdict,
    /// Rows sampled and opened.
    pub sampled_rows: usize,
    /// Time the verifier took (not part of the worker's work).
    pub verify_time: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs one fresh challenge of `shape` in `mode` on the backend's first device, opens
/// `sampled` random rows and verifies them. `warmup` untimed challenges of the same size run
/// first, so the numbers are a running worker's (buffers and kernels already set up).
pub fn run_bench(
    backend: &dyn Backend,
    mode: Mode,
    shape: Shape,
    sampled: u32,
    warmup: u32,
) -> Result<BenchOutcome, BackendError> {
    let device = backend
        .devices()
        .first()
        .ok_or_else(|| BackendError::Unavailable("the backend has no device".into()))?
        .key
        .clone();
    let now = UnixMillis::now();
    let challenge = Challenge {
        id: ChallengeId(1),
        seed: Seed(rand::random()),
        mode,
        shape,
        issued_at: now,
        deadline: UnixMillis(now.0.saturating_add(600_000)),
    };
    for _ in 0..warmup {
        let fresh = Challenge { seed: Seed(rand::random()), ..challenge.clone() };
        run_challenge(backend, &device, &fresh)?;
    }
    let run = run_challenge(backend, &device, &challenge)?;
    let rows = sample_rows(&mut rand::rng(), shape.m, sampled);
    let openings = run.open(&rows)?;
    let started = Instant::now();
    let verdict = verify_openings(mode, challenge.shape, &run.seed, &run.root(), &rows, &openings);
    let verify_time = started.elapsed();

    let t = run.execution().timings;
    let total = t.generate + t.gemm + t.hash + run.merkle_time;
    let overhead = t.generate + t.hash + run.merkle_time;
    let report = BenchReport {
        backend: backend.kind().to_string(),
        mode: mode.to_string(),
        n: shape.n,
        m: shape.m,
        k: shape.k,
        generate_ms: ms(t.generate),
        gemm_ms: ms(t.gemm),
        hash_ms: ms(t.hash),
        merkle_ms: ms(run.merkle_time),
        total_ms: ms(total),
        gflops: challenge.shape.ops() / t.gemm.as_secs_f64().max(1e-9) / 1e9,
        overhead_pct: 100.0 * overhead.as_secs_f64() / total.as_secs_f64().max(1e-12),
        verified: verdict.is_accepted(),
        verify_ms: ms(verify_time),
        bare_gemm_ms: None,
        gemm_vs_bare_pct: None,
        overhead_vs_bare_pct: None,
    };
    Ok(BenchOutcome { report, verdict, sampled_rows: rows.len(), verify_time })
}

impl BenchOutcome {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let r = &self.report;
        let unit = if r.mode == "int8" { "GOP/s" } else { "GFLOP/s" };
        let verdict = match &self.verdict {
            Verdict::Accepted => "accepted".to_owned(),
            Verdict::Rejected(reason) => format!("REJECTED: {reason}"),
        };
        format!(
            "backend {} · mode {} · {}x{}x{} (m x k x n)\n\
             generate {:>10.2} ms\n\
             gemm     {:>10.2} ms   {:.1} {unit}\n\
             hash     {:>10.2} ms\n\
             merkle   {:>10.2} ms\n\
             total    {:>10.2} ms   overhead {:.2}%\n\
             verify   {:>10.2} ms   {:.2}% of gemm · {} sampled rows: {verdict}",
            r.backend,
            r.mode,
            r.m,
            r.k,
            r.n,
            r.generate_ms,
            r.gemm_ms,
            r.gflops,
            r.hash_ms,
            r.merkle_ms,
            r.total_ms,
            r.overhead_pct,
            r.verify_ms,
            100.0 * r.verify_ms / r.gemm_ms.max(1e-9),
            self.sampled_rows,
        )
    }
}

/// Runs the bench on CUDA and adds the bare cuBLAS comparison to the report.
/// [`BackendError::NotCompiled`] in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub fn run_cuda_bench(
    _mode: Mode,
    _shape: Shape,
    _sampled: u32,
    _warmup: u32,
) -> Result<BenchOutcome, BackendError> {
    Err(BackendError::NotCompiled(veribench_kernels::BackendKind::Cuda))
}

/// Runs the bench on CUDA and adds the bare cuBLAS comparison to the report.
#[cfg(feature = "cuda")]
pub fn run_cuda_bench(
    mode: Mode,
    shape: Shape,
    sampled: u32,
    warmup: u32,
) -> Result<BenchOutcome, BackendError> {
    let cuda = &veribench_kernels::CudaBackend::new()?;
    let mut outcome = run_bench(cuda, mode, shape, sampled, warmup)?;
    let device = cuda
        .devices()
        .first()
        .map(|d| d.key.clone())
        .ok_or_else(|| BackendError::Unavailable("no CUDA device".into()))?;
    let bare = ms(cuda.bare_gemm(&device, mode, shape, 5)?.best);
    let r = &mut outcome.report;
    r.bare_gemm_ms = Some(bare);
    r.gemm_vs_bare_pct = Some(100.0 * bare / r.gemm_ms.max(1e-9));
    r.overhead_vs_bare_pct = Some(100.0 * (r.total_ms - bare) / bare.max(1e-9));
    Ok(outcome)
}

/// One tile configuration's measured speed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TunedTiles {
    /// `wg_x, wg_y, tm, tn, tile_k`, as the shader sees them.
    pub tiles: String,
    /// GFLOP/s (GOP/s for int8) of the GEMM with these tiles.
    pub gflops: f64,
}

/// What `bench --tune --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TuneReport {
    /// Always `wgpu`.
    pub backend: String,
    /// Mode tuned.
    pub mode: String,
    /// Size tuned at.
    pub n: u32,
    /// The fastest configuration that computed correctly.
    pub best: TunedTiles,
    /// Every configuration that computed correctly, fastest first.
    pub candidates: Vec<TunedTiles>,
}

/// Sweeps the wgpu GEMM's tile sizes at `n` in `mode` and ranks them, on the wgpu backend as
/// `--backend wgpu` opens it. [`BackendError::NotCompiled`] in a build without `wgpu`.
#[cfg(not(feature = "wgpu"))]
pub fn run_tune(_mode: Mode, _n: u32) -> Result<TuneReport, BackendError> {
    Err(BackendError::NotCompiled(veribench_kernels::BackendKind::Wgpu))
}

/// Sweeps the wgpu GEMM's tile sizes at `n` in `mode` and ranks them, on the wgpu backend as
/// `--backend wgpu` opens it.
#[cfg(feature = "wgpu")]
pub fn run_tune(mode: Mode, n: u32) -> Result<TuneReport, BackendError> {
    use veribench_kernels::TileConfig;
    use veribench_kernels::wgpu::GemmKernel;

    let wgpu = crate::select::open_wgpu_explicit()?;
    let ranked = wgpu.tune(mode, n, &TileConfig::candidates(GemmKernel::for_mode(mode)))?;
    let candidates: Vec<TunedTiles> =
        ranked.iter().map(|(t, g)| TunedTiles { tiles: t.to_string(), gflops: *g }).collect();
    let best = candidates
        .first()
        .cloned()
        .ok_or_else(|| BackendError::Device("no tile configuration computed correctly".into()))?;
    Ok(TuneReport { backend: "wgpu".into(), mode: mode.to_string(), n, best, candidates })
}

impl TuneReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("wgpu tile sweep · mode {} · n = {}\n", self.mode, self.n);
        for c in &self.candidates {
            out += &format!(
                "{:>10.2} {}  {}\n",
                c.gflops,
                if self.mode == "int8" { "GOP/s  " } else { "GFLOP/s" },
                c.tiles
            );
        }
        out += &format!("best: {} at {:.2}", self.best.tiles, self.best.gflops);
        out
    }
}

#[cfg(test)]
mod tests {
    use veribench_kernels::CpuBackend;

    use super::*;

    #[test]
    fn the_report_keeps_every_key_and_adds_verify_ms() {
        let shape = Shape { m: 40, k: 56, n: 48 };
        let out = run_bench(&CpuBackend::new(), Mode::Int8, shape, 4, 0).expect("cpu runs");
        assert!(out.report.verified, "{:?}", out.verdict);
        let json = serde_json::to_value(&out.report).expect("serialises");
        let keys: Vec<&str> =
            json.as_object().expect("object").keys().map(String::as_str).collect();
        for key in [
            "backend",
            "mode",
            "n",
            "m",
            "k",
            "generate_ms",
            "gemm_ms",
            "hash_ms",
            "merkle_ms",
            "total_ms",
            "gflops",
            "overhead_pct",
            "verified",
            "verify_ms",
        ] {
            assert!(keys.contains(&key), "{key} missing from {json}");
        }
        assert_eq!(json["verify_ms"], out.verify_time.as_secs_f64() * 1e3);
        assert!(out.report.verify_ms > 0.0);
        assert_eq!(
            (json["m"].as_u64(), json["k"].as_u64(), json["n"].as_u64()),
            (Some(40), Some(56), Some(48))
        );
        assert_eq!(out.sampled_rows, 4);
        assert!(out.table().contains("% of gemm"), "{}", out.table());
    }
}
