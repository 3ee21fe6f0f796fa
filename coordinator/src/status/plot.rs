//! Each worker's GFLOP/s over time as an SVG drawn on the server: one polyline per worker,
//! axes with labelled ticks, a legend. Colours are presentation attributes, not `style`, so a
//! `default-src 'self'` policy keeps them.

use super::html::{escape, iso};
use veribench_protocol::UnixMillis;

/// Line colours, repeated beyond eight workers.
const PALETTE: [&str; 8] =
    ["#2b6cb0", "#c05621", "#2f855a", "#b83280", "#6b46c1", "#c53030", "#2c7a7b", "#975a16"];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
/// Room for the axis labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;
/// Ticks per axis.
const TICKS: u32 = 4;

/// One worker's points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The worker key as hex (the polyline's `data-worker`).
    pub worker: String,
    /// What the legend says (the worker's name, from the peer: escaped here).
    pub label: String,
    /// (time, GFLOP/s), oldest first.
    pub points: Vec<(UnixMillis, f64)>,
}

/// The plot of `series` over `[from, to]`; `empty` is shown inside it when no series has a point.
pub fn gflops_plot(series: &[Series], from: UnixMillis, to: UnixMillis, empty: &str) -> String {
    let drawn: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    let top = drawn
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0_f64, f64::max);
    let y_max = nice_ceiling(top);
    let (t0, t1) = (from.0 as f64, (to.0.max(from.0 + 1)) as f64);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: UnixMillis| LEFT + ((t.0 as f64 - t0) / (t1 - t0)).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| TOP + plot_h - (v / y_max).clamp(0.0, 1.0) * plot_h;

    let mut svg = format!(
        "<svg class=\"gflops-plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} \
         {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"GFLOP/s per worker over time\">\n"
    );
    // Axes.
    let (x_axis, y_axis_bottom) = (TOP + plot_h, TOP + plot_h);
    svg.push_str(&format!(
        "<g class=\"axes\" stroke=\"#718096\" fill=\"none\"><line x1=\"{LEFT}\" y1=\"{TOP}\" \
         x2=\"{LEFT}\" y2=\"{y_axis_bottom}\"/><line x1=\"{LEFT}\" y1=\"{x_axis}\" x2=\"{}\" \
         y2=\"{x_axis}\"/></g>\n",
        LEFT + plot_w
    ));
    svg.push_str("<g class=\"ticks\" font-size=\"11\" fill=\"#4a5568\">\n");
    for i in 0..=TICKS {
        let v = y_max * f64::from(i) / f64::from(TICKS);
        let py = y(v);
        svg.push_str(&format!(
            "<line x1=\"{}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT,
            LEFT + plot_w,
            LEFT - 6.0,
            py + 4.0,
            tick_label(v)
        ));
        let t =
            UnixMillis(from.0 + (to.0.saturating_sub(from.0)) * u64::from(i) / u64::from(TICKS));
        let px = x(t);
        let anchor = match i {
            0 => "start",
            i if i == TICKS => "end",
            _ => "middle",
        };
        // hh:mm UTC; the full time in a tooltip.
        let stamp = iso(t);
        svg.push_str(&format!(
            "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\"><title>{stamp}</title>{}\
             </text>\n",
            x_axis + 16.0,
            &stamp[11..16]
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">time (UTC)</text>\n\
         <text x=\"12\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">\
         GFLOP/s</text>\n</g>\n",
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    ));
    if drawn.is_empty() {
        svg.push_str(&format!(
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#718096\">{}</text>\n",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0,
            escape(empty)
        ));
    }
    for (i, s) in drawn.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        svg.push_str(&format!(
            "<polyline class=\"series\" data-worker=\"{}\" fill=\"none\" stroke=\"{colour}\" \
             stroke-width=\"2\" points=\"{}\"><title>{}</title></polyline>\n",
            escape(&s.worker),
            points.join(" "),
            escape(&s.label)
        ));
        // A lone point would be an invisible polyline: mark every point.
        for &(t, v) in s.points.iter().filter(|p| p.1.is_finite()) {
            svg.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                x(t),
                y(v)
            ));
        }
        svg.push('\n');
    }
    svg.push_str("</svg>\n");
    if !drawn.is_empty() {
        svg.push_str("<ul class=\"legend\">");
        for (i, s) in drawn.iter().enumerate() {
            svg.push_str(&format!(
                "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" \
                 height=\"12\" fill=\"{}\"/></svg> {}</li>",
                PALETTE[i % PALETTE.len()],
                escape(&s.label)
            ));
        }
        svg.push_str("</ul>\n");
    }
    svg
}

/// The smallest of 1, 2, 2.5 or 5 × 10^k at or above `v` (10 for nothing to show).
fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 10.0;
    }
    let base = 10_f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * base).find(|c| *c >= v).unwrap_or(10.0 * base)
}

/// A tick value without needless decimals.
fn tick_label(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() { format!("{v:.0}") } else { format!("{v:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(worker: &str, label: &str, points: &[(u64, f64)]) -> Series {
        Series {
            worker: worker.into(),
            label: label.into(),
            points: points.iter().map(|&(t, v)| (UnixMillis(t), v)).collect(),
        }
    }

    #[test]
    fn one_polyline_per_worker_with_points_scaled_into_the_frame() {
        let svg = gflops_plot(
            &[
                series("aa", "<b>rig</b>", &[(1_000, 50.0), (2_000, 100.0)]),
                series("bb", "idle", &[]),
            ],
            UnixMillis(1_000),
            UnixMillis(2_000),
            "none",
        );
        assert_eq!(svg.matches("<polyline class=\"series\"").count(), 1);
        assert!(svg.contains("data-worker=\"aa\""));
        assert!(!svg.contains("data-worker=\"bb\""));
        // 100 is the top of the axis: the last point sits on the top edge, the first halfway.
        assert!(
            svg.contains(&format!(
                "points=\"{LEFT:.1},{:.1} {:.1},{TOP:.1}\"",
                TOP + 106.0,
                WIDTH - RIGHT
            )),
            "{svg}"
        );
        assert!(svg.contains("&lt;b&gt;rig&lt;/b&gt;") && !svg.contains("<b>rig"));
        assert!(!svg.contains(">none<"));
    }

    #[test]
    fn no_points_draws_the_axes_and_the_empty_text() {
        let svg = gflops_plot(&[], UnixMillis(0), UnixMillis(3_600_000), "no verified challenges");
        assert!(svg.starts_with("<svg class=\"gflops-plot\""));
        assert!(!svg.contains("<polyline"));
        assert!(svg.contains(">no verified challenges</text>"));
        assert!(svg.contains(">01:00<"));
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 10.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
        assert_eq!(nice_ceiling(2_100.0), 2_500.0);
        assert_eq!(nice_ceiling(0.03), 0.05);
    }
}
