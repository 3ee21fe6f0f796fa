//! Escaping and the page layout. Every value that comes from a peer or the database goes
//! through [`escape`] before it reaches markup; numbers and the layout's own text need not.

use veribench_protocol::{PublicKey, UnixMillis};

/// `s` safe as HTML text and as a double- or single-quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The pages of the navigation bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// `/`: health and miners.
    Overview,
    /// A miner's page (under the overview).
    Miner,
    /// `/weights`.
    Weights,
    /// `/consensus` (only when consensus is on).
    Consensus,
    /// `/market` (only when the market is on).
    Market,
}

/// Which optional pages exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sections {
    /// `[consensus] enabled`.
    pub consensus: bool,
    /// `[market] enabled`.
    pub market: bool,
}

/// A whole document: head with the stylesheet and the optional script (no inline script or
/// style, so `default-src 'self'` holds), the navigation, and `body` inside `<main>`.
pub fn page(title: &str, current: Nav, sections: Sections, body: &str) -> String {
    let mut links = vec![("/", "Overview", Nav::Overview), ("/weights", "Weights", Nav::Weights)];
    if sections.consensus {
        links.push(("/consensus", "Consensus", Nav::Consensus));
    }
    if sections.market {
        links.push(("/market", "Market", Nav::Market));
    }
    let nav: String = links
        .iter()
        .map(|(href, label, which)| {
            let here = *which == current || (current == Nav::Miner && *which == Nav::Overview);
            let aria = if here { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"{href}\"{aria}>{label}</a>")
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · veribench coordinator</title>\n\
         <link rel=\"stylesheet\" href=\"/static/status.css\">\n\
         <link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\n\
         <script src=\"/static/status.js\" defer></script>\n</head>\n<body>\n\
         <header><span class=\"brand\">veribench coordinator</span><nav>{nav}</nav></header>\n\
         <main>\n{body}</main>\n\
         <footer>veribench-coordinator {version}</footer>\n</body>\n</html>\n",
        title = escape(title),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// `at` as `YYYY-MM-DD hh:mm:ss UTC` in a `<time>` element (the script shows it in local time).
pub fn time(at: UnixMillis) -> String {
    let iso = iso(at);
    format!("<time datetime=\"{iso}\">{}</time>", iso.replace('T', " ").replace('Z', " UTC"))
}

/// An optional time, or a dash.
pub fn opt_time(at: Option<UnixMillis>) -> String {
    at.map_or_else(|| DASH.to_owned(), time)
}

/// What an absent value shows.
pub const DASH: &str = "—";

/// `at` as RFC 3339 UTC with seconds (`2026-12-06T17:53:54Z`).
pub fn iso(at: UnixMillis) -> String {
    let secs = at.0 / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration as `3d 4h 5m 6s`, leading zero units left out.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes}m")
    } else if hours > 0 {
        format!("{hours}h {minutes}m {seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// A rate or score with `decimals` places (a non-finite value, which the store refuses to
/// write, shows as a dash).
pub fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() { format!("{x:.decimals$}") } else { DASH.to_owned() }
}

/// An optional number.
pub fn opt_num(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| DASH.to_owned(), |x| num(x, decimals))
}

/// A key shortened for tables (`ab12cd…ef90`), the full hex and SS58 in its tooltip.
pub fn short_key(k: &PublicKey) -> String {
    let hex = k.to_string();
    let ss58 = veribench_wallet::ss58_encode(k, veribench_wallet::BITTENSOR_SS58_PREFIX)
        .unwrap_or_default();
    format!(
        "<span class=\"key\" title=\"{hex} {ss58}\">{}…{}</span>",
        &hex[..8],
        &hex[hex.len() - 6..],
        ss58 = escape(&ss58)
    )
}

/// `yes`/`no` with a class for colour.
pub fn flag(b: bool, yes: &str, no: &str) -> String {
    if b {
        format!("<span class=\"ok\">{yes}</span>")
    } else {
        format!("<span class=\"bad\">{no}</span>")
    }
}

/// A `<table>` with `id`, a header row of plain labels and `rows` (already markup), or the
/// `empty` text when there are none.
pub fn table(id: &str, headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\" id=\"{id}-empty\">{empty}</p>\n");
    }
    let head: String = headers.iter().map(|h| format!("<th scope=\"col\">{h}</th>")).collect();
    format!(
        "<div class=\"scroll\"><table id=\"{id}\">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{}\
         </tbody>\n</table></div>\n",
        rows.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_text_and_both_attribute_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("rig-7 ünïcode"), "rig-7 ünïcode");
    }

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(iso(UnixMillis(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso(UnixMillis(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(iso(UnixMillis(1_796_579_634_999)), "2026-12-06T17:53:54Z");
        assert!(time(UnixMillis(0)).contains(">1970-01-01 00:00:00 UTC</time>"));
        assert_eq!(duration(std::time::Duration::from_secs(93_784)), "1d 2h 3m");
        assert_eq!(duration(std::time::Duration::from_secs(61)), "1m 1s");
    }
}
