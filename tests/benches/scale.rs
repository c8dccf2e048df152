//! Fleet simulator (issue #13): the release `kdfed-hub` against a real hub API server and
//! N virtual members in this process, each the real hub-sync code; M clusters placed,
//! propagated and Ready; idle traffic, a hub restart and a member loss measured. Prints one
//! table per size, and writes `scale.csv` and `scale.png` into the output folder
//! (default docs/benchmarks/). How it works and what it found: docs/benchmarks.md.
//!
//! ```sh
//! cargo build --release -p kdfed-hub -p kdfed-spoke
//! cargo bench -p kdfed-testbed --bench scale                       # 10 × 100
//! cargo bench -p kdfed-testbed --bench scale -- --size 100x1000    # one size
//! cargo bench -p kdfed-testbed --bench scale -- --matrix           # N 10/100/1000 × M 100/1000/10000
//! ```
//!
//! Flags: `--size NxM` (repeatable), `--matrix`, `--idle SECONDS` (60), `--real-spoke
//! SECONDS` (one real release spoke idle that long beside the simulated ones), `--no-restart`,
//! `--no-loss`, `--steady COUNT` (clusters created one at a time at rest after the idle
//! window, 20), `--spoke-binary PATH` (the real spoke's binary, e.g. a `--profile small` build),
//! `--director-delay-ms MS` (1000), `--report-interval SECONDS` (the virtual
//! members' capacity-report period; default 10 s up to 100 members, N/10 s above), `--out DIR`.

#[path = "../tests/simulator/mod.rs"]
mod simulator;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::prelude::*;
use simulator::{CSV_HEADER, Figures, Sim, SimSettings};

struct Args {
    sizes: Vec<(usize, usize)>,
    idle: u64,
    real_spoke: Option<u64>,
    spoke_binary: Option<PathBuf>,
    steady: usize,
    restart: bool,
    loss: bool,
    delay_ms: u64,
    report_secs: u64,
    out: PathBuf,
}

fn parse_size(s: &str) -> (usize, usize) {
    let (n, m) = s.split_once('x').unwrap_or_else(|| panic!("--size takes NxM, e.g. 100x1000, not {s}"));
    let number = |v: &str| v.parse().unwrap_or_else(|_| panic!("--size {s}: {v} is not a number"));
    (number(n), number(m))
}

fn args() -> Args {
    let mut a = Args {
        sizes: Vec::new(),
        idle: 60,
        real_spoke: None,
        spoke_binary: None,
        steady: 20,
        restart: true,
        loss: true,
        delay_ms: 1000,
        report_secs: 0,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--size" => a.sizes.push(parse_size(&value("--size"))),
            "--matrix" => {
                a.sizes = [10, 100, 1000].iter().flat_map(|n| [100, 1000, 10000].map(|m| (*n, m))).collect();
            }
            "--idle" => a.idle = value("--idle").parse().expect("--idle SECONDS"),
            "--real-spoke" => a.real_spoke = Some(value("--real-spoke").parse().expect("--real-spoke SECONDS")),
            "--steady" => a.steady = value("--steady").parse().expect("--steady COUNT"),
            "--spoke-binary" => a.spoke_binary = Some(PathBuf::from(value("--spoke-binary"))),
            "--director-delay-ms" => a.delay_ms = value("--director-delay-ms").parse().expect("--director-delay-ms MS"),
            "--report-interval" => {
                a.report_secs = value("--report-interval").parse().expect("--report-interval SECONDS")
            }
            "--out" => a.out = PathBuf::from(value("--out")),
            "--no-restart" => a.restart = false,
            "--no-loss" => a.loss = false,
            // `cargo bench` passes --bench; anything else is a mistake worth stopping on.
            "--bench" => {}
            other => panic!("unknown flag {other} (see the top of tests/benches/scale.rs)"),
        }
    }
    if a.sizes.is_empty() {
        a.sizes.push((10, 100));
    }
    a
}

/// Keeps the CSV's rows of other sizes and replaces the row of this size.
fn write_csv(path: &Path, f: &Figures) -> std::io::Result<Vec<Vec<f64>>> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let key = format!("{},{},", f.members, f.clusters);
    let mut rows: Vec<String> =
        old.lines().skip(1).filter(|l| !l.starts_with(&key) && !l.trim().is_empty()).map(str::to_string).collect();
    rows.push(f.csv_row());
    rows.sort_by_key(|r| {
        let v: Vec<usize> = r.split(',').take(2).filter_map(|x| x.parse().ok()).collect();
        (v.get(1).copied().unwrap_or(0), v.first().copied().unwrap_or(0))
    });
    std::fs::write(path, format!("{CSV_HEADER}\n{}\n", rows.join("\n")))?;
    Ok(rows.iter().map(|r| r.split(',').map(|x| x.parse().unwrap_or(f64::NAN)).collect()).collect())
}

/// Registers DejaVu Sans for the plot's text if the machine has it; without it the plot is
/// drawn without text (the CSV has every figure).
fn font() -> bool {
    let paths = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];
    let Some(bytes) = paths.iter().find_map(|p| std::fs::read(p).ok()) else { return false };
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
}

fn column(name: &str) -> usize {
    CSV_HEADER.split(',').position(|c| c == name).unwrap_or_else(|| panic!("no CSV column {name}"))
}

/// Latency percentiles and hub RSS per size, side by side, sizes on the x axis.
fn plot(path: &Path, rows: &[Vec<f64>]) -> Result<(), Box<dyn std::error::Error>> {
    let text = font();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    let labels: Vec<String> = rows.iter().map(|r| format!("{}x{}", r[0], r[1])).collect();
    let n = rows.len().max(1);
    let series = [
        ("placed_p99_s", "create→Placed p99", RED),
        ("propagated_p99_s", "create→copy on member p99", BLUE),
        ("ready_p50_s", "create→Ready p50", GREEN),
        ("ready_p99_s", "create→Ready p99", BLACK),
    ];
    let ymax = series
        .iter()
        .flat_map(|(c, _, _)| rows.iter().map(move |r| r[column(c)]))
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max);
    let x_label = |x: &f64| labels.get(x.round() as usize).cloned().unwrap_or_default();
    let mut chart = ChartBuilder::on(&left);
    chart.margin(20);
    if text {
        chart
            .caption("latency from creation (s) by members x clusters", ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(45);
    }
    let mut chart = chart.build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..ymax * 1.1)?;
    if text {
        chart.configure_mesh().x_labels(n).x_label_formatter(&x_label).draw()?;
    } else {
        chart.configure_mesh().disable_x_mesh().draw()?;
    }
    for (c, name, color) in series {
        let points: Vec<(f64, f64)> = rows.iter().enumerate().map(|(i, r)| (i as f64, r[column(c)])).collect();
        let drawn = chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        if text {
            drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
    }
    if text {
        chart.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;
    }
    let rss = column("hub_peak_rss_mib");
    let rmax = rows.iter().map(|r| r[rss]).filter(|v| v.is_finite()).fold(512.0_f64, f64::max);
    let mut chart = ChartBuilder::on(&right);
    chart.margin(20);
    if text {
        chart
            .caption("hub peak RSS (MiB); line: 512 MiB target", ("sans-serif", 18))
            .x_label_area_size(30)
            .y_label_area_size(45);
    }
    let mut chart = chart.build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..rmax * 1.1)?;
    if text {
        chart.configure_mesh().x_labels(n).x_label_formatter(&x_label).draw()?;
    } else {
        chart.configure_mesh().disable_x_mesh().draw()?;
    }
    chart.draw_series(
        rows.iter()
            .enumerate()
            .map(|(i, r)| Rectangle::new([(i as f64 - 0.3, 0.0), (i as f64 + 0.3, r[rss])], BLUE.mix(0.6).filled())),
    )?;
    chart.draw_series(LineSeries::new(vec![(-0.5, 512.0), (n as f64 - 0.5, 512.0)], RED.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let a = args();
    std::fs::create_dir_all(&a.out).expect("output folder");
    for (members, clusters) in &a.sizes {
        let mut s = SimSettings::new(*members, *clusters);
        s.idle = Duration::from_secs(a.idle);
        s.real_spoke = a.real_spoke.map(Duration::from_secs);
        s.spoke_binary = a.spoke_binary.clone();
        s.steady = a.steady;
        s.restart = a.restart;
        s.member_loss = a.loss;
        s.director_delay = Duration::from_millis(a.delay_ms);
        if a.report_secs > 0 {
            s.report_interval = Duration::from_secs(a.report_secs);
        }
        println!("fleet simulator: {members} members × {clusters} clusters ...");
        let sim = match Sim::run_all(s).await {
            Ok(sim) => sim,
            Err(e) => {
                eprintln!("{members} × {clusters}: {e:#}");
                std::process::exit(1);
            }
        };
        print!("{}", sim.figures.table());
        let rows = write_csv(&a.out.join("scale.csv"), &sim.figures).expect("write scale.csv");
        if let Err(e) = plot(&a.out.join("scale.png"), &rows) {
            eprintln!("plot not drawn: {e}");
        }
        drop(sim);
    }
    println!("wrote {} and {}", a.out.join("scale.csv").display(), a.out.join("scale.png").display());
}
