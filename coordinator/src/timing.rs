//! How the coordinator turns its own clock readings into a compute time, and which rates it
//! refuses to believe (SPEC §8.1 is the rule; this module is its implementation).
//!
//! The measured time of a challenge is `commitment arrival − challenge sent`, which includes one
//! network round trip. The round trip is estimated from WebSocket ping/pong exchanges, and a
//! worker can delay its pongs at will: a round trip can be made longer, never shorter. So the
//! credit subtracted is the *smallest* recent round trip completed before the challenge was sent,
//! never more than what the kernel's TCP stack measured on the same connection (the worker's
//! kernel acknowledges segments without asking it), and never more than a configured bound.
//! Round trips measured while a challenge is in flight are never credited.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use veribench_protocol::Mode;
use veribench_protocol::wire::HardwareInfo;

use crate::config::ConfigError;

/// Round trips remembered per connection.
pub const RTT_SAMPLES: usize = 16;

/// Peak rates of a device per challenge mode, in GOP/s (one multiply-add is two operations).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRates {
    /// int8 inputs, i32 accumulation.
    pub int8: f64,
    /// fp16 inputs, f32 accumulation.
    pub fp16: f64,
    /// bf16 inputs, f32 accumulation.
    pub bf16: f64,
    /// fp32 without TF32.
    pub fp32: f64,
}

impl ModeRates {
    /// The rate of `mode`.
    pub fn of(&self, mode: Mode) -> f64 {
        match mode {
            Mode::Int8 => self.int8,
            Mode::Fp16 => self.fp16,
            Mode::Bf16 => self.bf16,
            Mode::Fp32 => self.fp32,
        }
    }

    fn all(&self) -> [f64; 4] {
        [self.int8, self.fp16, self.bf16, self.fp32]
    }

    const fn tera(int8: f64, fp16: f64, bf16: f64, fp32: f64) -> Self {
        Self { int8: int8 * 1e3, fp16: fp16 * 1e3, bf16: bf16 * 1e3, fp32: fp32 * 1e3 }
    }
}

/// A GPU model's dense peak, matched against the name a worker reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuPeak {
    /// Matched case-insensitively as a substring of the reported name; the longest match wins
    /// (so "H100 NVL" can differ from "H100").
    pub name: String,
    /// Its dense peak per mode, GOP/s.
    pub peak: ModeRates,
}

/// The timing rule's and the plausibility check's constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingConfig {
    /// The largest round trip ever subtracted from a commitment's elapsed time, in milliseconds.
    /// Longer round trips are the worker's problem: its compute time then includes the excess.
    pub max_rtt_credit_ms: f64,
    /// A verified rate above `plausibility_factor` × the claimed hardware's peak is recorded as
    /// `implausible_rate` and not credited.
    pub plausibility_factor: f64,
    /// Peak of one CPU core (logical core as reported), per mode, GOP/s. The default assumes the
    /// widest matrix units on sale (AMX at 4 GHz: 8 TOP/s int8; exact fp16/bf16 challenges can be
    /// computed in int8) so that no honest CPU is refused.
    pub cpu_core_peak: ModeRates,
    /// CPU cores believed at most, whatever a worker reports.
    pub max_cpu_cores: u32,
    /// Known GPU models.
    pub gpus: Vec<GpuPeak>,
    /// The peak assumed for a GPU whose name matches no entry of `gpus`: the fastest known.
    pub unknown_gpu_peak: ModeRates,
}

impl Default for TimingConfig {
    fn default() -> Self {
        let gpu = |name: &str, peak| GpuPeak { name: name.into(), peak };
        Self {
            max_rtt_credit_ms: 250.0,
            plausibility_factor: 1.5,
            cpu_core_peak: ModeRates { int8: 8192.0, fp16: 8192.0, bf16: 8192.0, fp32: 400.0 },
            max_cpu_cores: 1024,
            // Dense tensor-core peaks from the vendors' data sheets (fp32 without TF32).
            gpus: vec![
                gpu("B200", ModeRates::tera(4500.0, 2250.0, 2250.0, 80.0)),
                gpu("H200", ModeRates::tera(1979.0, 989.0, 989.0, 67.0)),
                gpu("H100", ModeRates::tera(1979.0, 989.0, 989.0, 67.0)),
                gpu("A100", ModeRates::tera(624.0, 312.0, 312.0, 19.5)),
                gpu("L40S", ModeRates::tera(733.0, 362.0, 362.0, 91.6)),
                gpu("RTX 5090", ModeRates::tera(838.0, 419.0, 419.0, 104.8)),
                gpu("RTX 4090", ModeRates::tera(661.0, 330.0, 330.0, 82.6)),
                gpu("RTX 3090", ModeRates::tera(284.0, 142.0, 142.0, 35.6)),
            ],
            unknown_gpu_peak: ModeRates::tera(4500.0, 2250.0, 2250.0, 105.0),
        }
    }
}

impl TimingConfig {
    /// The largest round trip credited.
    pub fn max_rtt_credit(&self) -> Duration {
        Duration::try_from_secs_f64(self.max_rtt_credit_ms / 1e3).unwrap_or(Duration::ZERO)
    }

    /// Checks that every bound is a positive number (`max_rtt_credit_ms` may be 0: no credit).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if !(self.max_rtt_credit_ms >= 0.0 && self.max_rtt_credit_ms.is_finite()) {
            return Err(ConfigError::NotPositive("timing.max_rtt_credit_ms"));
        }
        if !positive(self.plausibility_factor) {
            return Err(ConfigError::NotPositive("timing.plausibility_factor"));
        }
        if self.max_cpu_cores == 0 {
            return Err(ConfigError::NotPositive("timing.max_cpu_cores"));
        }
        let tables = [
            ("timing.cpu_core_peak", &self.cpu_core_peak),
            ("timing.unknown_gpu_peak", &self.unknown_gpu_peak),
        ];
        for (name, rates) in tables {
            if !rates.all().into_iter().all(positive) {
                return Err(ConfigError::NotPositive(name));
            }
        }
        for g in &self.gpus {
            if g.name.trim().is_empty() {
                return Err(ConfigError::EmptyName("timing.gpus"));
            }
            if !g.peak.all().into_iter().all(positive) {
                return Err(ConfigError::NotPositive("timing.gpus.peak"));
            }
        }
        Ok(())
    }

    /// The peak a device can plausibly reach, from what its worker reported: the per-core CPU
    /// peak times the reported cores (capped) for `cpu:` devices, the named model's peak for a
    /// GPU (the fastest known when the name matches nothing or the GPU is not in the report).
    pub fn device_peak(&self, device: &str, hardware: &HardwareInfo) -> ModeRates {
        if device.starts_with("cpu:") {
            let cores = f64::from(hardware.cpu_cores.clamp(1, self.max_cpu_cores));
            let p = &self.cpu_core_peak;
            return ModeRates {
                int8: p.int8 * cores,
                fp16: p.fp16 * cores,
                bf16: p.bf16 * cores,
                fp32: p.fp32 * cores,
            };
        }
        let Some(gpu) = hardware.gpus.iter().find(|g| g.uuid == device) else {
            return self.unknown_gpu_peak;
        };
        let name = gpu.name.to_lowercase();
        self.gpus
            .iter()
            .filter(|known| name.contains(&known.name.to_lowercase()))
            .max_by_key(|known| known.name.len())
            .map_or(self.unknown_gpu_peak, |known| known.peak)
    }
}

/// One ping/pong exchange of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttSample {
    /// When the pong arrived.
    pub received: Instant,
    /// Pong arrival − ping sent.
    pub rtt: Duration,
    /// The smallest round trip the kernel's TCP stack had measured on the connection by then,
    /// where the platform reports it.
    pub kernel_min: Option<Duration>,
}

/// What the round-trip credit of one challenge was based on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RttBasis {
    /// No pong arrived before the challenge was sent: nothing is credited.
    NoSamples,
    /// The smallest pong round trip before the challenge.
    Pong,
    /// The kernel's TCP round trip, smaller than every pong's.
    Kernel,
    /// The configured bound, smaller than both.
    Cap,
}

/// The round trip subtracted from one challenge's elapsed time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttCredit {
    /// What is subtracted.
    pub credited: Duration,
    /// Why it is that much.
    pub basis: RttBasis,
}

/// The recent round trips of one connection.
#[derive(Clone, Debug, Default)]
pub struct RttSamples {
    samples: VecDeque<RttSample>,
}

impl RttSamples {
    /// Records a pong, forgetting the oldest past [`RTT_SAMPLES`].
    pub fn push(&mut self, sample: RttSample) {
        if self.samples.len() == RTT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The credit of a challenge sent at `sent`: the smallest round trip of the pongs received
    /// before `sent`, bounded by the kernel's smallest TCP round trip at the time of those pongs
    /// and by `cap`. Pongs received after `sent` are ignored: while its challenge is in flight a
    /// worker could delay them to inflate its credit.
    pub fn credit(&self, sent: Instant, cap: Duration) -> RttCredit {
        let before = self.samples.iter().filter(|s| s.received <= sent);
        let Some(pong) = before.clone().map(|s| s.rtt).min() else {
            return RttCredit { credited: Duration::ZERO, basis: RttBasis::NoSamples };
        };
        let kernel = before.filter_map(|s| s.kernel_min).min();
        let mut credit = RttCredit { credited: pong, basis: RttBasis::Pong };
        if let Some(k) = kernel
            && k < credit.credited
        {
            credit = RttCredit { credited: k, basis: RttBasis::Kernel };
        }
        if cap < credit.credited {
            credit = RttCredit { credited: cap, basis: RttBasis::Cap };
        }
        credit
    }

    /// The largest round trip among pongs received after `sent` (during a challenge), for the
    /// log: a round trip that grows while the worker computes is its own problem, never credit.
    pub fn largest_since(&self, sent: Instant) -> Option<Duration> {
        self.samples.iter().filter(|s| s.received > sent).map(|s| s.rtt).max()
    }
}

/// Compute time: elapsed minus the credited round trip, at least a microsecond.
pub fn compute_time(elapsed: Duration, credit: RttCredit) -> Duration {
    elapsed.saturating_sub(credit.credited).max(Duration::from_micros(1))
}

/// Reads the kernel's smallest measured round trip of a TCP connection (`TCP_INFO`'s
/// `tcpi_min_rtt`, Linux). The worker's kernel acknowledges our segments on its own, so a worker
/// process cannot make this shorter, and delaying it needs control of its TCP stack.
#[derive(Clone, Copy, Debug)]
pub struct KernelRtt {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::RawFd,
}

impl KernelRtt {
    /// A probe of `tcp`'s socket. It must only be read while `tcp` (or the stream that took it
    /// over: TLS, WebSocket) is alive, which holds inside the connection's own session.
    pub fn of(tcp: &tokio::net::TcpStream) -> Self {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            Self { fd: tcp.as_raw_fd() }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tcp;
            Self {}
        }
    }

    /// The smallest round trip the kernel measured, or `None` where it cannot say.
    pub fn min_rtt(&self) -> Option<Duration> {
        #[cfg(target_os = "linux")]
        {
            let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            // SAFETY: `info` is a writable buffer of `len` bytes; the kernel writes at most `len`
            // bytes and reports how many. The fd belongs to a socket this session owns.
            let rc = unsafe {
                libc::getsockopt(
                    self.fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    info.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            let needed =
                std::mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + std::mem::size_of::<u32>();
            if rc != 0 || (len as usize) < needed {
                return None;
            }
            // SAFETY: zero-initialised and partly filled by the kernel; every field is an integer.
            let info = unsafe { info.assume_init() };
            // The kernel reports ~0 (u32::MAX when unmeasured) in microseconds.
            (info.tcpi_min_rtt != u32::MAX && info.tcpi_min_rtt > 0)
                .then(|| Duration::from_micros(u64::from(info.tcpi_min_rtt)))
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veribench_protocol::wire::GpuInfo;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn samples(start: Instant, rtts: &[(u64, u64, Option<u64>)]) -> RttSamples {
        let mut s = RttSamples::default();
        for &(at, rtt, kernel) in rtts {
            s.push(RttSample {
                received: start + ms(at),
                rtt: ms(rtt),
                kernel_min: kernel.map(ms),
            });
        }
        s
    }

    #[test]
    fn the_smallest_round_trip_before_the_challenge_is_credited() {
        let t0 = Instant::now();
        // Pongs at 0..3 s: 40, 25, 900 (delayed) ms; challenge sent at 3.5 s; a pong during it.
        let s = samples(t0, &[(0, 40, None), (1000, 25, None), (2000, 900, None), (4000, 1, None)]);
        let c = s.credit(t0 + ms(3500), ms(250));
        assert_eq!(c, RttCredit { credited: ms(25), basis: RttBasis::Pong });
        assert_eq!(s.largest_since(t0 + ms(3500)), Some(ms(1)));
    }

    #[test]
    fn delayed_pongs_never_buy_more_than_the_kernel_round_trip_or_the_cap() {
        let t0 = Instant::now();
        // Every pong held a second; the kernel saw 2 ms.
        let s = samples(t0, &[(0, 1002, Some(2)), (1000, 1001, Some(2))]);
        assert_eq!(
            s.credit(t0 + ms(1500), ms(250)),
            RttCredit { credited: ms(2), basis: RttBasis::Kernel }
        );
        // Without a kernel reading, the cap bounds it.
        let s = samples(t0, &[(0, 1002, None)]);
        assert_eq!(
            s.credit(t0 + ms(1500), ms(250)),
            RttCredit { credited: ms(250), basis: RttBasis::Cap }
        );
    }

    #[test]
    fn no_pong_before_the_challenge_means_no_credit() {
        let t0 = Instant::now();
        let s = samples(t0, &[(2000, 5, Some(1))]);
        let c = s.credit(t0 + ms(1000), ms(250));
        assert_eq!(c, RttCredit { credited: Duration::ZERO, basis: RttBasis::NoSamples });
        assert_eq!(compute_time(ms(80), c), ms(80));
        assert_eq!(
            compute_time(ms(1), RttCredit { credited: ms(5), basis: RttBasis::Pong }),
            Duration::from_micros(1)
        );
    }

    #[test]
    fn only_the_last_samples_are_kept() {
        let t0 = Instant::now();
        let mut s = samples(t0, &[(0, 1, None)]);
        for i in 1..=RTT_SAMPLES as u64 {
            s.push(RttSample { received: t0 + ms(i), rtt: ms(50), kernel_min: None });
        }
        assert_eq!(s.credit(t0 + ms(100), ms(250)).credited, ms(50));
    }

    fn hardware(cores: u32, gpus: &[(&str, &str)]) -> HardwareInfo {
        HardwareInfo {
            cpu_model: "test".into(),
            cpu_cores: cores,
            memory_bytes: 1 << 30,
            gpus: gpus
                .iter()
                .map(|(uuid, name)| GpuInfo {
                    uuid: (*uuid).into(),
                    name: (*name).into(),
                    memory_bytes: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn device_peaks_follow_the_reported_hardware_within_bounds() {
        let c = TimingConfig::default();
        let hw =
            hardware(4, &[("GPU-a", "NVIDIA H100 80GB HBM3"), ("GPU-b", "Mystery Accelerator")]);
        assert_eq!(c.device_peak("cpu:x", &hw).of(Mode::Int8), 4.0 * 8192.0);
        assert_eq!(c.device_peak("GPU-a", &hw).of(Mode::Fp32), 67e3);
        assert_eq!(c.device_peak("GPU-b", &hw), c.unknown_gpu_peak);
        assert_eq!(c.device_peak("GPU-missing", &hw), c.unknown_gpu_peak);
        // A claim of a million cores is believed up to max_cpu_cores.
        let huge = hardware(1_000_000, &[]);
        assert_eq!(c.device_peak("cpu:x", &huge).of(Mode::Fp32), 400.0 * 1024.0);
        // Zero cores still allow one.
        assert_eq!(c.device_peak("cpu:x", &hardware(0, &[])).of(Mode::Fp32), 400.0);
    }

    #[test]
    fn the_longest_matching_gpu_name_wins() {
        let mut c = TimingConfig::default();
        c.gpus.push(GpuPeak { name: "H100 NVL".into(), peak: ModeRates::tera(1.0, 1.0, 1.0, 1.0) });
        let hw = hardware(1, &[("GPU-a", "NVIDIA H100 NVL")]);
        assert_eq!(c.device_peak("GPU-a", &hw).of(Mode::Int8), 1e3);
    }

    #[test]
    fn invalid_bounds_are_refused() {
        assert!(TimingConfig::default().validate().is_ok());
        let c = TimingConfig { plausibility_factor: f64::NAN, ..TimingConfig::default() };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::NotPositive("timing.plausibility_factor"))
        ));
        let c = TimingConfig { max_rtt_credit_ms: -1.0, ..TimingConfig::default() };
        assert!(c.validate().is_err());
        let mut c = TimingConfig::default();
        c.gpus.push(GpuPeak { name: " ".into(), peak: c.unknown_gpu_peak });
        assert!(matches!(c.validate(), Err(ConfigError::EmptyName("timing.gpus"))));
    }

    #[test]
    fn the_kernel_reports_a_round_trip_on_a_loopback_connection() {
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            let _ = client;
            let rtt = KernelRtt::of(&server).min_rtt();
            if cfg!(target_os = "linux") {
                let rtt = rtt.expect("TCP_INFO min_rtt on Linux");
                assert!(rtt < Duration::from_millis(100), "{rtt:?}");
            }
        });
    }
}
