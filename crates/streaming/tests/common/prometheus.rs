//! A real Prometheus server for the tests (Debian's `prometheus`, which `scripts/dev-up`
//! installs): it scrapes the service under test every second, evaluates the repository's
//! alert rules, and answers instant queries over its HTTP API. Also the dashboard's panel
//! queries, read from the Grafana JSON the repository ships.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, Proc};

/// The repository's alert rules and dashboard.
pub(crate) fn observability_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/observability")
        .join(relative)
}

/// A running Prometheus; stopped when dropped.
pub(crate) struct Prometheus {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// One series of a query's answer: its labels and value.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// The series' labels.
    pub(crate) labels: serde_json::Map<String, Value>,
    /// Its value at the query's time.
    pub(crate) value: f64,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port of a /metrics endpoint) every second,
    /// with the repository's alert rules loaded; returns once it is ready.
    pub(crate) fn start(target: &str) -> Prometheus {
        let bin = std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = observability_file("alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: firstclick\n    static_configs:\n      - targets: \
             ['{target}']\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin} ({e}): this test needs Prometheus (Debian package \
                     `prometheus`; `scripts/dev-up` installs it, or set PROMETHEUS)"
                )
            });
        let p = Prometheus {
            port,
            _proc: Proc(Some(child)),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.get("/-/ready").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready after 30 s; log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// What Prometheus logged.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// A GET on Prometheus' HTTP API: status and body (None while it does not answer).
    fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// The answer to the instant query `promql`; panics on an error (a bad query included).
    pub(crate) fn query(&self, promql: &str) -> Vec<Sample> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .expect("Prometheus answers");
        let v: Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(status, 200, "query {promql}: {body}");
        assert_eq!(v["status"], "success", "query {promql}: {body}");
        let result = &v["data"]["result"];
        let one = |r: &Value| Sample {
            labels: r["metric"].as_object().cloned().unwrap_or_default(),
            value: r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN),
        };
        match v["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .map_or(Vec::new(), |a| a.iter().map(one).collect()),
            Some("scalar") => vec![Sample {
                labels: Default::default(),
                value: result[1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN),
            }],
            other => panic!("query {promql}: unexpected result type {other:?}"),
        }
    }

    /// The sum of the values of `promql`'s answer (0 when it has none).
    pub(crate) fn sum(&self, promql: &str) -> f64 {
        self.query(promql).iter().map(|s| s.value).sum()
    }

    /// Waits (up to `within`) until `promql` sums to `want`; returns the last sum.
    pub(crate) fn wait_for_sum(&self, promql: &str, want: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let got = self.sum(promql);
            if got == want || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The alert rules Prometheus loaded, by name, with their state (`inactive`, `pending`,
    /// `firing`) and health.
    pub(crate) fn rules(&self) -> Vec<(String, String, String)> {
        let (_, body) = self.get("/api/v1/rules").expect("Prometheus answers");
        let v: Value = serde_json::from_str(&body).expect("JSON answer");
        let mut out = Vec::new();
        for group in v["data"]["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                out.push((
                    rule["name"].as_str().unwrap_or_default().to_owned(),
                    rule["state"].as_str().unwrap_or_default().to_owned(),
                    rule["health"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        out
    }
}

/// Every panel query of the Grafana dashboard: (panel title, expression), with
/// `$__rate_interval` replaced by `rate_interval`.
pub(crate) fn dashboard_queries(rate_interval: &str) -> Vec<(String, String)> {
    let path = observability_file("grafana/dashboards/firstclick.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        // Collapsed rows keep their panels inside.
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    title.to_owned(),
                    expr.replace("$__rate_interval", rate_interval),
                ));
            }
        }
    }
    out
}

/// `s` percent-encoded for a URL's query string.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
