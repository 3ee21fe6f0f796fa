//! [`UrlPolicy`]: which URLs a validator is willing to fetch, decided before any connection.
//!
//! A miner hands out the URLs, so every one of them is hostile input. The policy is the gate
//! against server-side request forgery (a validator fetching `http://169.254.169.254/` or an
//! internal service for the miner) and against a miner steering downloads to a host it controls
//! in order to stall or fill the validator. Omron's check was a substring test, which let
//! `r2.cloudflarestorage.com.evil.com` and `evil.com/?r2.cloudflarestorage.com` through; here
//! the host parsed by a WHATWG URL parser must *equal* an allowed host or end with `"." +` an
//! allowed suffix, and everything that makes a host ambiguous is refused outright:
//!
//! | refused | why |
//! | --- | --- |
//! | scheme other than `https` | `file:`, `ftp:`, `gopher:` … reach other things than a bucket |
//! | `http` unless the host is in `http_hosts` | plain text can be altered on the way; only for tests on loopback |
//! | user info (`https://user@host`) | `https://r2.cloudflarestorage.com@evil.com/` goes to evil.com |
//! | percent-encoded or non-ASCII host, IDN (`xn--`) labels | their decoding differs between parsers, and lookalikes |
//! | IP literals (any notation: `127.1`, `0x7f.0.0.1`, `[::1]`) unless listed in `allowed_hosts` | no bucket lives at an IP literal; internal services do |
//! | host with a trailing dot | `r2.dev.` is a different name to some resolvers and TLS stacks |
//! | ports other than `allowed_ports` (default 443) | an allowlisted host's other ports are not its bucket service |
//! | URLs longer than [`MAX_URL_LEN`] | presigned URLs are a few hundred bytes |
//!
//! The fetcher applies the same check to every redirect hop (reqwest's automatic redirects are
//! off), so a redirect cannot leave the allowlist either.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 4096;

/// The default allowed host suffixes: Cloudflare R2 (API and public buckets) and global S3.
pub const DEFAULT_SUFFIXES: [&str; 3] = ["r2.cloudflarestorage.com", "r2.dev", "s3.amazonaws.com"];

/// Why a URL is not fetched. The `Display` text is the reason shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL of {0} bytes is longer than {MAX_URL_LEN}")]
    TooLong(usize),
    /// Not a URL.
    #[error("not a valid URL: {0}")]
    Unparseable(String),
    /// A scheme other than https (or http for test hosts).
    #[error("scheme {0:?} is not allowed (https only)")]
    Scheme(String),
    /// Plain http to a host not listed in `http_hosts`.
    #[error("plain http to {0} is not allowed (https only; http only for hosts in http_hosts)")]
    PlainHttp(String),
    /// A user name or password in the URL.
    #[error("URL carries user info (user@host), which hides the real host")]
    UserInfo,
    /// No host at all.
    #[error("URL has no host")]
    NoHost,
    /// Non-ASCII characters in the host as written.
    #[error("host contains non-ASCII characters (unicode hosts are refused)")]
    NonAsciiHost,
    /// Percent-encoding in the host as written.
    #[error("host contains percent-encoding")]
    EncodedHost,
    /// An internationalized (punycode) label.
    #[error("host {0} has an internationalized (xn--) label")]
    Idn(String),
    /// An IP literal not listed in `allowed_hosts`.
    #[error("IP literal host {0} is not allowed")]
    IpLiteral(String),
    /// A trailing dot after the host.
    #[error("host {0:?} ends with a dot")]
    TrailingDot(String),
    /// A host outside the allowlist.
    #[error("host {0} is not in the allowlist")]
    HostNotAllowed(String),
    /// A port outside `allowed_ports`.
    #[error("port {0} is not allowed")]
    Port(u16),
}

impl UrlRefusal {
    /// A short stable code, for logs and the fetch record.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong(_) => "too_long",
            Self::Unparseable(_) => "unparseable",
            Self::Scheme(_) => "scheme",
            Self::PlainHttp(_) => "plain_http",
            Self::UserInfo => "userinfo",
            Self::NoHost => "no_host",
            Self::NonAsciiHost => "non_ascii_host",
            Self::EncodedHost => "encoded_host",
            Self::Idn(_) => "idn",
            Self::IpLiteral(_) => "ip_literal",
            Self::TrailingDot(_) => "trailing_dot",
            Self::HostNotAllowed(_) => "host_not_allowed",
            Self::Port(_) => "port",
        }
    }
}

/// The URL policy of the coordinator's fetcher (`[circuit.url_policy]` in its configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPolicy {
    /// Hosts allowed as they are (exact match). IP literals are allowed only when listed here,
    /// written as `127.0.0.1` or `::1`.
    pub allowed_hosts: Vec<String>,
    /// Suffixes: a host passes when it equals one or ends with `"." + suffix`.
    pub allowed_suffixes: Vec<String>,
    /// Also allow AWS S3 regional endpoints: `[bucket.]s3.<region>.amazonaws.com`,
    /// `[bucket.]s3.dualstack.<region>.amazonaws.com` and `[bucket.]s3-<region>.amazonaws.com`
    /// (not the rest of `amazonaws.com`, which includes anyone's EC2 instances).
    pub allow_s3_regional: bool,
    /// Hosts (exact, already allowed by the lists above) that may be reached over plain http on
    /// any port: for tests against a loopback server only.
    pub http_hosts: Vec<String>,
    /// Ports allowed for https (an absent port means 443).
    pub allowed_ports: Vec<u16>,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_suffixes: DEFAULT_SUFFIXES.iter().map(|s| (*s).to_owned()).collect(),
            allow_s3_regional: true,
            http_hosts: Vec::new(),
            allowed_ports: vec![443],
        }
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-3`: 2 letters, 1-2 words, digits.
fn is_aws_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else { return false };
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    (3..=4).contains(&parts.len())
        && first.len() == 2
        && letters(first)
        && (1..=2).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_digit())
        && parts[1..parts.len() - 1].iter().all(|p| letters(p))
}

/// Whether `host` is an S3 regional endpoint (see [`UrlPolicy::allow_s3_regional`]).
pub fn is_s3_regional_host(host: &str) -> bool {
    let Some(rest) = host.strip_suffix(".amazonaws.com") else { return false };
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return false;
    }
    match labels.as_slice() {
        [.., "s3", "dualstack", region] | [.., "s3", region] => is_aws_region(region),
        [.., last] => last.strip_prefix("s3-").is_some_and(is_aws_region),
        [] => false,
    }
}

/// The authority of a URL as written (after `scheme:` and any slashes, up to the path), before
/// any decoding.
fn raw_authority(raw: &str) -> Option<&str> {
    let after = raw[raw.find(':')? + 1..].trim_start_matches(['/', '\\']);
    let end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    Some(&after[..end])
}

impl UrlPolicy {
    /// A policy allowing plain http to the listed loopback hosts, on top of the defaults: what
    /// tests against a local S3 server use.
    pub fn with_test_hosts(hosts: &[&str]) -> Self {
        let mut p = Self::default();
        for h in hosts {
            p.allowed_hosts.push((*h).to_owned());
            p.http_hosts.push((*h).to_owned());
        }
        p
    }

    /// Checks a configuration: suffixes need at least two labels (a suffix `com` would allow
    /// the whole top-level domain), entries must be plain lowercase names.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.allowed_suffixes {
            if s.split('.').filter(|l| !l.is_empty()).count() < 2 || s.starts_with('.') {
                return Err(format!(
                    "url_policy.allowed_suffixes: {s:?} must be a domain of at least two labels \
                     without a leading dot"
                ));
            }
        }
        for h in self.allowed_hosts.iter().chain(&self.allowed_suffixes).chain(&self.http_hosts) {
            if h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii_graphic()) {
                return Err(format!("url_policy: {h:?} must be a lowercase ASCII host"));
            }
        }
        Ok(())
    }

    /// Checks a URL as written by the miner, raw-text checks included, and returns it parsed.
    pub fn check_str(&self, raw: &str) -> Result<Url, UrlRefusal> {
        if raw.len() > MAX_URL_LEN {
            return Err(UrlRefusal::TooLong(raw.len()));
        }
        if let Some(authority) = raw_authority(raw) {
            let host_part = authority.rsplit('@').next().unwrap_or(authority);
            if !host_part.is_ascii() {
                return Err(UrlRefusal::NonAsciiHost);
            }
            if host_part.contains('%') {
                return Err(UrlRefusal::EncodedHost);
            }
        }
        let url = Url::parse(raw).map_err(|e| UrlRefusal::Unparseable(e.to_string()))?;
        self.check(&url)?;
        Ok(url)
    }

    /// Checks a parsed URL (also every redirect target).
    pub fn check(&self, url: &Url) -> Result<(), UrlRefusal> {
        if url.as_str().len() > MAX_URL_LEN {
            return Err(UrlRefusal::TooLong(url.as_str().len()));
        }
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(UrlRefusal::Scheme(scheme.to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::UserInfo);
        }
        let host = match url.host() {
            None => return Err(UrlRefusal::NoHost),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(d)) => self.check_domain(d)?,
        };
        let test_host = self.http_hosts.iter().any(|h| h == &host);
        if scheme == "http" && !test_host {
            return Err(UrlRefusal::PlainHttp(host));
        }
        if let Some(port) = url.port()
            && !test_host
            && !self.allowed_ports.contains(&port)
        {
            return Err(UrlRefusal::Port(port));
        }
        Ok(())
    }

    fn check_ip(&self, ip: IpAddr) -> Result<String, UrlRefusal> {
        let text = ip.to_string();
        if self.allowed_hosts.iter().any(|h| h.trim_matches(['[', ']']) == text) {
            Ok(text)
        } else {
            Err(UrlRefusal::IpLiteral(text))
        }
    }

    fn check_domain(&self, host: &str) -> Result<String, UrlRefusal> {
        if host.ends_with('.') {
            return Err(UrlRefusal::TrailingDot(host.to_owned()));
        }
        if !host.is_ascii() || host.contains('%') {
            return Err(UrlRefusal::NonAsciiHost);
        }
        if host.split('.').any(|l| l.starts_with("xn--")) {
            return Err(UrlRefusal::Idn(host.to_owned()));
        }
        let host = host.to_ascii_lowercase();
        let allowed = self.allowed_hosts.contains(&host)
            || self.allowed_suffixes.iter().any(|s| {
                host == *s
                    || host
                        .strip_suffix(s.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            })
            || (self.allow_s3_regional && is_s3_regional_host(&host));
        if allowed { Ok(host) } else { Err(UrlRefusal::HostNotAllowed(host)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_s3_hosts() {
        for ok in [
            "s3.us-east-1.amazonaws.com",
            "bucket.s3.eu-central-1.amazonaws.com",
            "my.bucket.s3.dualstack.ap-southeast-2.amazonaws.com",
            "bucket.s3-us-west-2.amazonaws.com",
            "s3.us-gov-west-1.amazonaws.com",
        ] {
            assert!(is_s3_regional_host(ok), "{ok}");
        }
        for bad in [
            "ec2-1-2-3-4.compute-1.amazonaws.com",
            "evil.execute-api.us-east-1.amazonaws.com",
            "bucket.s3-website-us-east-1.amazonaws.com",
            "bucket.s3-website.us-east-1.amazonaws.com",
            "s3.us-east-1.amazonaws.com.evil.com",
            "s3.evil.amazonaws.com",
            "amazonaws.com",
            "s3..us-east-1.amazonaws.com",
        ] {
            assert!(!is_s3_regional_host(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_accept_real_bucket_urls() {
        let p = UrlPolicy::default();
        for ok in [
            "https://acc123.r2.cloudflarestorage.com/bucket/ab/vk.key?X-Amz-Signature=1",
            "https://pub-1234.r2.dev/ab/vk.key",
            "https://bucket.s3.amazonaws.com/ab/vk.key",
            "https://s3.amazonaws.com/bucket/ab/vk.key",
            "https://bucket.s3.us-east-1.amazonaws.com/ab/vk.key",
            "https://ACC.R2.CloudflareStorage.com:443/x",
        ] {
            p.check_str(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        p.validate().expect("defaults valid");
        let mut bad = UrlPolicy::default();
        bad.allowed_suffixes.push("com".into());
        assert!(bad.validate().is_err());
    }
}
