//! The chart: throughput, p99 latency and server CPU per call against
//! connections, one line per target, one row per workload (plotters' SVG
//! backend: no font libraries).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

use crate::model::{Durability, Mode, Target, Workload};
use crate::report::Report;

fn color(t: Target) -> RGBColor {
    match t {
        Target::Native => RGBColor(0xd6, 0x27, 0x28),
        Target::Lua => RGBColor(0x1f, 0x77, 0xb4),
        Target::Raw => RGBColor(0x2c, 0xa0, 0x2c),
        Target::Pg => RGBColor(0x94, 0x67, 0xbd),
        Target::Noop => RGBColor(0x7f, 0x7f, 0x7f),
        Target::Sharded => RGBColor(0xff, 0x7f, 0x0e),
        Target::Base => RGBColor(0x8c, 0x56, 0x4b),
        Target::ShardedBase => RGBColor(0xe3, 0x77, 0xc2),
    }
}

/// Height of one workload's row of panels, and of the title above them.
const PANEL_HEIGHT_PX: u32 = 360;
const TITLE_HEIGHT_PX: u32 = 60;

pub fn write_svg(report: &Report, path: &Path) -> Result<()> {
    let conns = &report.plan.conns;
    let (cmin, cmax) = (
        *conns.iter().min().unwrap_or(&1) as f64,
        *conns.iter().max().unwrap_or(&1) as f64,
    );
    let (xlo, xhi) = (cmin * 0.8, (cmax * 1.25).max(cmin * 1.5));
    let height = PANEL_HEIGHT_PX * Workload::ALL.len() as u32 + TITLE_HEIGHT_PX;
    let root = SVGBackend::new(path, (1500, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root
        .titled(
            "dialogs: native procedures vs Lua vs raw IPROTO vs PostgreSQL (C connections, one request outstanding on each)",
            ("sans-serif", 20),
        )
        .map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((Workload::ALL.len(), 3));
    for (row, w) in Workload::ALL.iter().enumerate() {
        for col in 0..3 {
            let area = &panels[row * 3 + col];
            let series: Vec<(Target, Vec<(f64, f64)>)> = Target::ALL
                .iter()
                .map(|&t| {
                    let pts = conns
                        .iter()
                        .filter_map(|&c| {
                            let r = report.find(t, *w, Mode::Conns, Durability::Write, c)?;
                            let y = match col {
                                0 => r.ops_per_sec,
                                1 => r.p99_ms.max(0.001),
                                _ => r.server_cpu_us,
                            };
                            Some((c as f64, y))
                        })
                        .collect();
                    (t, pts)
                })
                .filter(|(_, p): &(Target, Vec<(f64, f64)>)| !p.is_empty())
                .collect();
            if series.is_empty() {
                // Not run (filtered out): an empty panel, not an empty range.
                continue;
            }
            let ymax = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
                .fold(0.0, f64::max);
            let ymin = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
                .fold(f64::INFINITY, f64::min);
            let caption = match col {
                0 => format!("{w}: throughput, ops/s"),
                1 => format!("{w}: p99 latency, ms (log)"),
                _ => format!("{w}: server CPU per call, µs"),
            };
            let mut b = ChartBuilder::on(area);
            b.caption(caption, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(64);
            if col != 1 {
                let mut chart = b
                    .build_cartesian_2d((xlo..xhi).log_scale(), 0.0..(ymax * 1.15).max(1.0))
                    .map_err(|e| anyhow!("{e}"))?;
                let ylabel = |y: &f64| {
                    if col == 0 {
                        format!("{:.0}k", y / 1000.0)
                    } else {
                        format!("{y:.0}")
                    }
                };
                chart
                    .configure_mesh()
                    .x_desc("connections")
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&ylabel)
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
                draw_series(&mut chart, &series, SeriesLabelPosition::UpperRight)?;
            } else {
                let lo = (ymin * 0.7).max(0.001);
                let hi = (ymax * 1.4).max(lo * 10.0);
                let mut chart = b
                    .build_cartesian_2d((xlo..xhi).log_scale(), (lo..hi).log_scale())
                    .map_err(|e| anyhow!("{e}"))?;
                chart
                    .configure_mesh()
                    .x_desc("connections")
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .y_label_formatter(&|y| format!("{y:.2}"))
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
                draw_series(&mut chart, &series, SeriesLabelPosition::UpperLeft)?;
            }
        }
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn draw_series<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[(Target, Vec<(f64, f64)>)],
    legend: SeriesLabelPosition,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (t, pts) in series {
        let c = color(*t);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(t.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}
