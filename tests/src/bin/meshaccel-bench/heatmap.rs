//! The matrix as an SVG heatmap: one row per scenario and metric, one column per message
//! size, each cell coloured by its ratio on a log scale centred on 1.0 (red slower, blue
//! faster, saturated at ¼× and 4×) and labelled with the ratio and its spread.
use std::fmt::Write as _;

use crate::matrix::{Metric, Scenario, Summary};
use crate::opts::size_label;

const LABEL_W: usize = 190;
const CELL_W: usize = 88;
const CELL_H: usize = 46;
const TOP: usize = 56;
/// log₂ of the ratio where the colour saturates (4×).
const SATURATE: f64 = 2.0;

pub fn svg(cells: &[Summary], sizes: &[usize], caption: &str) -> String {
    let rows: Vec<(Scenario, Metric)> = Scenario::ALL
        .iter()
        .flat_map(|&s| [Metric::PingPong, Metric::Stream, Metric::ConnRate].map(|m| (s, m)))
        .collect();
    // Wide enough for the title and caption however few sizes were measured.
    let width = (LABEL_W + CELL_W * sizes.len().max(1) + 20).max(820);
    let height = TOP + CELL_H * rows.len() + 110;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">meshaccel: accelerated ÷ plain (speed; &gt; 1 is faster), median (min–max)</text>"#
    );
    let _ = writeln!(out, r#"<text x="10" y="38" font-size="11" fill="dimgray">{}</text>"#, escape(caption));
    for (i, size) in sizes.iter().enumerate() {
        let x = LABEL_W + i * CELL_W + CELL_W / 2;
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            TOP - 4,
            size_label(*size)
        );
    }
    for (r, &(scenario, metric)) in rows.iter().enumerate() {
        let y = TOP + r * CELL_H;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{} {}</text>"#,
            LABEL_W - 8,
            y + CELL_H / 2 + 4,
            scenario.label(),
            metric.short()
        );
        if metric == Metric::ConnRate {
            // One cell (connections carry 1 byte) across the whole row.
            let c = cells.iter().find(|c| c.key.metric == metric && c.key.scenario == scenario);
            cell(&mut out, LABEL_W, y, CELL_W * sizes.len().max(1), c);
            continue;
        }
        for (i, size) in sizes.iter().enumerate() {
            let c = cells.iter().find(|c| c.key.metric == metric && c.key.scenario == scenario && c.key.size == *size);
            cell(&mut out, LABEL_W + i * CELL_W, y, CELL_W, c);
        }
    }
    legend(&mut out, TOP + CELL_H * rows.len() + 30);
    out.push_str("</svg>\n");
    out
}

fn cell(out: &mut String, x: usize, y: usize, w: usize, c: Option<&Summary>) {
    let (fill, ink, main, sub) = match c.and_then(|c| c.ratio.filter(|_| c.valid).map(|r| (c, r))) {
        Some((c, r)) => {
            let t = (r.median.log2() / SATURATE).clamp(-1.0, 1.0);
            let mark = if c.partial { "†" } else { "" };
            (
                colour(t),
                if t.abs() > 0.6 { "white" } else { "black" },
                format!("{:.2}×{mark}", r.median),
                format!("{:.2}–{:.2}", r.min, r.max),
            )
        }
        None if c.is_some() => ("#bdbdbd".into(), "black", "invalid".into(), "see results.md".into()),
        None => ("#eeeeee".into(), "#777", "—".into(), String::new()),
    };
    let (cx, cy) = (x + w / 2, y + CELL_H / 2);
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{y}" width="{w}" height="{CELL_H}" fill="{fill}" stroke="white" stroke-width="2"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{cx}" y="{}" font-size="14" font-weight="bold" text-anchor="middle" fill="{ink}">{main}</text>"#,
        cy
    );
    let _ = writeln!(
        out,
        r#"<text x="{cx}" y="{}" font-size="10" text-anchor="middle" fill="{ink}">{sub}</text>"#,
        cy + 14
    );
}

/// White at 0, red towards -1 (slower), blue towards +1 (faster).
fn colour(t: f64) -> String {
    let (end, a) = if t < 0.0 { ([192.0, 57.0, 43.0], -t) } else { ([36.0, 113.0, 163.0], t) };
    let c = end.map(|e: f64| (255.0 + (e - 255.0) * a).round() as u8);
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn legend(out: &mut String, y: usize) {
    let (x0, w, steps) = (LABEL_W, 300usize, 30usize);
    for i in 0..steps {
        let t = -1.0 + 2.0 * (i as f64 + 0.5) / steps as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{y}" width="{}" height="14" fill="{}"/>"#,
            x0 + i * w / steps,
            w / steps + 1,
            colour(t)
        );
    }
    for (label, t) in [("¼×", -1.0), ("½×", -0.5), ("1×", 0.0), ("2×", 0.5), ("4×", 1.0)] {
        let x = x0 as f64 + (t + 1.0) / 2.0 * w as f64;
        let _ = writeln!(out, r#"<text x="{x:.0}" y="{}" font-size="11" text-anchor="middle">{label}</text>"#, y + 28);
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="end">slower ← → faster</text>"#,
        x0 - 8,
        y + 11
    );
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="10" fill="dimgray">† some accelerated samples had &lt; 90 % of their bytes redirected; grey: no valid sample</text>"#,
        y + 48
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scale_is_centred_on_one() {
        assert_eq!(colour(0.0), "#ffffff");
        assert_eq!(colour(-1.0), "#c0392b");
        assert_eq!(colour(1.0), "#2471a3");
    }

    #[test]
    fn svg_is_well_formed_without_cells() {
        let s = svg(&[], &[64, 1024], "a < b");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt; b") && s.contains("1 KiB"));
    }
}
