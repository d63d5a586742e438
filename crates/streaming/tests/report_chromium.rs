//! The HTML report in a real browser: `streaming replay --report` on a generated data set with
//! every model, then headless Chromium loads the file. Its serialised DOM must hold every chart
//! as an SVG element with the expected bars (so the browser parsed the page as intended), and
//! its screenshot must show the charts: mostly not blank, and the bars' own colours present.
//! Chromium is the Debian package `chromium` (`scripts/dev-up` installs it); when it is missing
//! the test fails saying so, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use firstclick_datagen::{write_data_set, DataSetPaths, Generator, GeneratorConfig};

const MODELS: [&str; 5] = [
    "first_click",
    "last_click",
    "linear",
    "time_decay",
    "position_based",
];

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} not found: this test renders the HTML report in headless Chromium. Install it with \
         `apt-get install -y chromium` (Debian package chromium; `scripts/dev-up` does it as \
         root), or point CHROMIUM at a Chromium binary.",
        path.display()
    );
    path
}

/// Runs `cmd` to its end, killing it after `limit` (a browser that hangs must fail the test,
/// not stall CI).
fn run_with_limit(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Read the pipes on their own threads so a chatty browser cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for the child") {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    Output {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
    }
}

fn browser(profile: &Path, extra: &[String], report: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", report.display()))
    .env("HOME", profile);
    cmd
}

/// The `class="bar"` elements inside `<svg data-chart="ID" ...> ... </svg>` of `dom`.
fn bars(dom: &str, id: &str) -> usize {
    let start = dom
        .find(&format!("data-chart=\"{id}\""))
        .unwrap_or_else(|| panic!("chart {id} missing from the DOM"));
    let end = start
        + dom[start..]
            .find("</svg>")
            .unwrap_or_else(|| panic!("chart {id} not closed"));
    dom[start..end].matches("class=\"bar\"").count()
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).expect("hex colour");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

#[test]
fn the_report_renders_in_chromium() {
    let chromium_path = chromium();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = GeneratorConfig {
        clicks: Some(5_000),
        seed: 11,
        users: 40,
        disorder_secs: 10.0,
        duplicate_rate: 0.02,
        organic_rate: 0.1,
        unknown_user_rate: 0.05,
        malformed_rate: 0.005,
        event_rate: 2.0,
        ..GeneratorConfig::default()
    };
    // A directory name HTML would trip over: the report names the input files.
    let data = dir.path().join("data <&> \"x\"");
    std::fs::create_dir(&data).expect("data dir");
    write_data_set(Generator::new(config), &DataSetPaths::in_dir(&data), |_| {})
        .expect("data set written");
    let report = dir.path().join("report.html");
    let p = |name: &str| data.join(name).to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_streaming"))
        .arg("replay")
        .args(["--clicks", &p("clicks.ndjson")])
        .args(["--checkouts", &p("checkouts.ndjson")])
        .args(["--users", &p("users.ndjson")])
        .args(["--out", &p("rows.ndjson")])
        .args(["--model", &MODELS.join(",")])
        .arg("--summary-json")
        .arg("--report")
        .arg(&report)
        .output()
        .expect("streaming replay runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("report written to"), "{stderr}");
    // The summary on stdout is still JSON alone.
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("summary JSON on stdout");
    assert!(summary["touches"].as_u64().unwrap_or(0) > 0);
    let html = std::fs::read_to_string(&report).expect("report written");
    eprintln!("report: {} bytes; {}", html.len(), stderr.trim());
    assert!(!html.contains("<script"), "the report needs no JavaScript");
    assert!(html.contains("data &lt;&amp;&gt; &quot;x&quot;/clicks.ndjson"));
    assert!(!html.contains("data <&>"));
    // No temporary file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // 1. The DOM as Chromium parsed it.
    let profile = tempfile::tempdir().expect("profile dir");
    let out = run_with_limit(
        browser(profile.path(), &["--dump-dom".to_string()], &report),
        Duration::from_secs(120),
        &format!("{} --dump-dom", chromium_path.display()),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let charts = dom.matches("<svg data-chart=").count();
    assert_eq!(charts, 3 + MODELS.len(), "one chart per section and model");
    for section in ["attributed-organic", "delays", "revenue", "top-products"] {
        assert!(
            dom.contains(&format!("<section id=\"{section}\"")),
            "{section}"
        );
    }
    assert_eq!(bars(&dom, "attributed-organic"), 4);
    assert_eq!(bars(&dom, "delays"), 11 * MODELS.len());
    assert_eq!(bars(&dom, "revenue"), MODELS.len());
    for m in MODELS {
        let n = bars(&dom, &format!("top-{m}"));
        assert!(n > 0 && n <= 10, "top-{m}: {n} bars");
    }
    for m in MODELS {
        assert!(dom.contains(&format!("<h3>{m}</h3>")), "{m}");
    }

    // 2. The screenshot: not blank, and the charts' colours are on it.
    let profile = tempfile::tempdir().expect("profile dir");
    let png_path = dir.path().join("report.png");
    let out = run_with_limit(
        browser(
            profile.path(),
            &[
                format!("--screenshot={}", png_path.display()),
                "--window-size=1200,1600".to_string(),
            ],
            &report,
        ),
        Duration::from_secs(120),
        &format!("{} --screenshot", chromium_path.display()),
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(keep) = std::env::var("REPORT_SCREENSHOT") {
        let _ = std::fs::copy(&png_path, &keep);
        let _ = std::fs::copy(&report, format!("{keep}.html"));
    }
    let file = std::fs::File::open(&png_path).expect("screenshot written");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size fits")];
    let frame = reader.next_frame(&mut buf).expect("PNG decodes");
    let (w, h) = (frame.width as usize, frame.height as usize);
    assert_eq!((w, h), (1200, 1600));
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let pixels: Vec<[u8; 3]> = buf[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let not_white = pixels.iter().filter(|p| p.iter().any(|c| *c < 245)).count();
    let distinct: std::collections::HashSet<[u8; 3]> = pixels.iter().copied().collect();
    eprintln!(
        "screenshot: {w}x{h}, {:.1} % not white, {} colours",
        100.0 * not_white as f64 / pixels.len() as f64,
        distinct.len()
    );
    // The page background is #f5f6f8 (counted as white here) and the charts sit on white;
    // text, bars and axes make up the rest.
    assert!(
        not_white > pixels.len() / 50,
        "{not_white} of {} pixels not white: the page looks blank",
        pixels.len()
    );
    assert!(distinct.len() > 20, "{} colours only", distinct.len());
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 4);
    // Attributed and organic bars (chart 1), every model's histogram bars (chart 2).
    for (what, c) in [
        ("attributed bars", "#2b6cb0"),
        ("organic bars", "#a0aec0"),
        ("last_click bars", "#dd6b20"),
        ("linear bars", "#2f855a"),
        ("time_decay bars", "#805ad5"),
        ("position_based bars", "#c53030"),
    ] {
        let n = pixels.iter().filter(|p| near(p, hex(c))).count();
        assert!(n > 100, "{what} ({c}): {n} pixels on the screenshot");
    }
}
