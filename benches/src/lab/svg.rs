//! One SVG timeline per scenario cell, written by hand: offered load against downstream
//! attempts, success rate, goodput, the stack's own rejections, p99 latency and the breaker's
//! state, a line per stack, the fault windows shaded behind them.
//!
//! Lines that overlap stay visible: each stack is drawn wider than the next and with its own
//! dash pattern, so a thin line on top of a wide one shows both colours.

use std::fmt::Write as _;

use crate::lab::report::ScenarioReport;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 130.0;
const GAP: f64 = 40.0;
const TOP: f64 = 70.0;
const PANELS: usize = 5;

/// Colour, line width and dash pattern of a stack's lines.
fn style(stack: &str) -> (&'static str, f64, &'static str) {
    match stack {
        "unprotected" => ("#7f7f7f", 5.0, ""),
        "naive" => ("#d62728", 4.0, "9 3"),
        "tower" => ("#ff7f0e", 3.0, "6 3"),
        "tower-resilience" => ("#9467bd", 2.2, "3 2"),
        "seawall" => ("#1f77b4", 1.5, ""),
        _ => ("#2ca02c", 1.5, "1 2"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The file name (without `.svg`) of a cell's timeline: its id and cell values.
pub fn file_stem(report: &ScenarioReport) -> String {
    let mut stem = report.id.clone();
    if let Some(cell) = &report.cell {
        for part in cell.parts() {
            stem.push('.');
            stem.push_str(&part.replace('=', "-"));
        }
    }
    stem
}

struct Panel {
    top: f64,
    seconds: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * t / self.seconds
    }

    /// `v` in `[0, 1]` from bottom to top.
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL * (1.0 - v.clamp(0.0, 1.0))
    }
}

/// A round step for about four ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(magnitude * 10.0)
}

/// Ticks from 0 to `max` (which grows to the last round tick), as shares of the axis.
fn linear_ticks(max: f64, unit: &str) -> (f64, Vec<(f64, String)>) {
    let max = max.max(1.0);
    let step = tick_step(max);
    let top = (max / step).ceil() * step;
    let ticks = (0..=((top / step).round() as usize))
        .map(|i| {
            let v = i as f64 * step;
            (
                v / top,
                format!("{}{unit}", crate::lab::metrics::fmt_num(v)),
            )
        })
        .collect();
    (top, ticks)
}

/// The SVG timeline of one scenario cell.
pub fn timeline(report: &ScenarioReport) -> String {
    let seconds = report.duration_s.max(1.0);
    let band_rows = report.stacks.len() as f64;
    let height = TOP + PANELS as f64 * (PANEL + GAP) + band_rows * 14.0 + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{} — {}</text>"#,
        escape(&report.name),
        escape(&report.description)
    );
    // Legend.
    let mut lx = LEFT;
    for stack in &report.stacks {
        let (color, width, dash) = style(stack.stack);
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="36" x2="{}" y2="36" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}"/><text x="{}" y="40">{}{}</text>"#,
            lx + 22.0,
            lx + 26.0,
            stack.stack,
            if stack.valid { "" } else { " (invalid)" }
        );
        lx += 36.0 + 7.0 * stack.stack.len() as f64 + if stack.valid { 0.0 } else { 56.0 };
    }
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="36" x2="{}" y2="36" stroke="black" stroke-dasharray="4 3"/><text x="{}" y="40">offered</text>"#,
        lx + 14.0,
        lx + 18.0
    );
    lx += 70.0;
    let _ = writeln!(
        s,
        r##"<rect x="{lx}" y="30" width="14" height="10" fill="#f4cccc"/><text x="{}" y="40">fault or load phase</text>"##,
        lx + 18.0
    );

    let panels: Vec<Panel> = (0..=PANELS)
        .map(|i| Panel {
            top: TOP + i as f64 * (PANEL + GAP),
            seconds,
        })
        .collect();
    let band_height = band_rows * 14.0;
    for (i, p) in panels.iter().enumerate() {
        let h = if i == PANELS { band_height } else { PANEL };
        for w in &report.fault_windows {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#f4cccc"/>"##,
                p.x(w[0]),
                p.top,
                p.x(w[1]) - p.x(w[0])
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="none" stroke="#999"/>"##,
            p.top,
            WIDTH - LEFT - RIGHT
        );
        let step = tick_step(seconds).max(1.0);
        let mut t = 0.0;
        while t <= seconds + 1e-9 {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
                p.x(t),
                p.top + h + 13.0
            );
            t += step;
        }
    }

    // Panel 1: offered and downstream attempts per second.
    let max_rate = report
        .stacks
        .iter()
        .flat_map(|st| st.series.attempts.iter().chain(&st.series.offered))
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let (top, ticks) = linear_ticks(max_rate, "");
    title(
        &mut s,
        &panels[0],
        "downstream attempts / s (dashed: offered requests / s)",
    );
    axis(&mut s, &panels[0], &ticks);
    if let Some(first) = report.stacks.first() {
        let pts = points(
            &panels[0],
            first
                .series
                .offered
                .iter()
                .map(|&o| Some(f64::from(o) / top)),
        );
        let _ = writeln!(
            s,
            r#"<polyline points="{pts}" fill="none" stroke="black" stroke-dasharray="4 3"/>"#
        );
    }
    for st in &report.stacks {
        let pts = points(
            &panels[0],
            st.series.attempts.iter().map(|&a| Some(f64::from(a) / top)),
        );
        line(&mut s, &pts, st.stack);
    }

    // Panel 2: success rate.
    title(&mut s, &panels[1], "success rate");
    let (_, ticks) = linear_ticks(100.0, "%");
    axis(&mut s, &panels[1], &ticks);
    for st in &report.stacks {
        let pts = points(&panels[1], st.series.success_rate.iter().copied());
        line(&mut s, &pts, st.stack);
    }

    // Panel 3: goodput.
    let max_good = report
        .stacks
        .iter()
        .flat_map(|st| st.series.goodput.iter())
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let (top, ticks) = linear_ticks(max_good, "");
    title(
        &mut s,
        &panels[2],
        "goodput: successes within the deadline / s",
    );
    axis(&mut s, &panels[2], &ticks);
    for st in &report.stacks {
        let pts = points(
            &panels[2],
            st.series.goodput.iter().map(|&g| Some(f64::from(g) / top)),
        );
        line(&mut s, &pts, st.stack);
    }

    // Panel 4: the stack's own rejections.
    let max_rej = report
        .stacks
        .iter()
        .flat_map(|st| st.series.rejections.iter())
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let (top, ticks) = linear_ticks(max_rej, "");
    title(
        &mut s,
        &panels[3],
        "rejected by the stack itself / s (no attempt sent)",
    );
    axis(&mut s, &panels[3], &ticks);
    for st in &report.stacks {
        let pts = points(
            &panels[3],
            st.series
                .rejections
                .iter()
                .map(|&r| Some(f64::from(r) / top)),
        );
        line(&mut s, &pts, st.stack);
    }

    // Panel 5: p99 latency, log scale from 1 ms to 10 s.
    title(
        &mut s,
        &panels[4],
        "p99 latency from intended send time (log)",
    );
    let log = |ms: f64| (ms.max(1.0).log10() / 4.0).min(1.0);
    axis(
        &mut s,
        &panels[4],
        &[
            (0.0, "1ms".into()),
            (0.25, "10ms".into()),
            (0.5, "100ms".into()),
            (0.75, "1s".into()),
            (1.0, "10s".into()),
        ],
    );
    for st in &report.stacks {
        let pts = points(&panels[4], st.series.p99_ms.iter().map(|v| v.map(log)));
        line(&mut s, &pts, st.stack);
    }

    // Panel 6: breaker state, a band per stack.
    let band = &panels[PANELS];
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">breaker (red: open, amber: half-open; paler: fewer of the calls)</text>"#,
        band.top - 6.0
    );
    for (row, st) in report.stacks.iter().enumerate() {
        let y = band.top + row as f64 * 14.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            y + 10.0,
            st.stack
        );
        for (sec, (&open, &half)) in st
            .series
            .breaker_open
            .iter()
            .zip(&st.series.breaker_half_open)
            .enumerate()
        {
            // Red when some calls of the second met an open breaker (stronger the more of
            // them: with one breaker per key or client, one open shows pale), amber when
            // half-open.
            let (fill, opacity) = if open > 0.0 {
                ("#d62728", open.max(0.25))
            } else if half > 0.0 {
                ("#ffbf00", half.max(0.25))
            } else {
                continue;
            };
            let x0 = band.x(sec as f64);
            let x1 = band.x(sec as f64 + 1.0);
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="12" fill="{fill}" fill-opacity="{opacity:.2}"/>"#,
                y + 1.0,
                x1 - x0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn title(s: &mut String, p: &Panel, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{text}</text>"#,
        p.top - 6.0
    );
}

fn axis(s: &mut String, p: &Panel, ticks: &[(f64, String)]) {
    for (v, label) in ticks {
        let y = p.y(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="#555"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{label}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

/// Polyline points at the middle of each second; a missing value breaks nothing, it is
/// skipped.
fn points(p: &Panel, values: impl Iterator<Item = Option<f64>>) -> String {
    let mut pts = String::new();
    for (sec, v) in values.enumerate() {
        if let Some(v) = v {
            let _ = write!(pts, "{:.1},{:.1} ", p.x(sec as f64 + 0.5), p.y(v));
        }
    }
    pts.trim_end().to_owned()
}

fn line(s: &mut String, pts: &str, stack: &str) {
    let (color, width, dash) = style(stack);
    let _ = writeln!(
        s,
        r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width}" stroke-dasharray="{dash}" stroke-opacity="0.9"/>"#
    );
}
