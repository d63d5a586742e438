//! Micro-benchmark of message parsing: `cargo bench -p firstclick-model --bench parse`.
//!
//! Generates varied lines shaped like the datagen's (two clicks per checkout, random UUIDs,
//! prices, user agents, addresses and timestamps, so that branch predictors cannot learn them),
//! then parses them in a loop and prints events/s, MB/s and ns/event for one core.
//! `PARSE_LINES` (default 20000) sets how many lines; `PARSE_ROUNDS` (default 30) the loops.

use std::hint::black_box;
use std::time::Instant;

use firstclick_model::{parse_checkout, parse_click};

const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (X11; OpenBSD amd64; rv:28.0) Gecko/20100101 Firefox/28.0",
    "Opera/9.80 (X11; Linux i686; U; es-ES) Presto/2.8.131 Version/11.11",
    "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; AS; rv:11.0) like Gecko",
    "Mozilla/5.0 (Windows; U; Windows NT 6.0; en-US) AppleWebKit/533.20.25 (KHTML, like Gecko) Version/5.0.4 Safari/533.20.27",
];
const WORDS: [&str; 8] = [
    "sed",
    "modi",
    "Marks",
    "Forks",
    "Ferry mouth",
    "Price Plains",
    "Port",
    "Jeffery Haag",
];
const PAYMENTS: [&str; 4] = ["credit_card", "gift_card", "paypal", "debit_card"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
    fn time(&mut self) -> String {
        let s = self.below(86_400);
        format!(
            "2026-01-{:02} {:02}:{:02}:{:02}.{:03}",
            1 + self.below(28),
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.below(1000)
        )
    }
    fn price(&mut self) -> String {
        let cents = 100 + self.below(99_900);
        if cents.is_multiple_of(10) {
            format!("{}.{}", cents / 100, cents / 10 % 10)
        } else {
            format!("{}.{:02}", cents / 100, cents % 100)
        }
    }
    fn ip(&mut self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.below(256),
            self.below(256),
            self.below(256),
            self.below(256)
        )
    }
}

fn main() {
    let n: usize = env("PARSE_LINES", 20_000);
    let rounds: usize = env("PARSE_ROUNDS", 30);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lines: Vec<(bool, String)> = Vec::with_capacity(n);
    for i in 0..n {
        let product = rng.uuid();
        let agent = rng.pick(&AGENTS);
        let ip = rng.ip();
        let user = 1 + rng.below(10_000);
        if i % 3 != 2 {
            let line = format!(
                r#"{{"click_id":"{}","user_id":{user},"product_id":"{product}","product":"{}","price":{},"url":"https://shop.example/products/{product}","user_agent":"{agent}","ip_address":"{ip}","datetime_occured":"{}"}}"#,
                rng.uuid(),
                rng.pick(&WORDS),
                rng.price(),
                rng.time()
            );
            lines.push((true, line));
        } else {
            let address = format!(
                "{} {} {}, {} {}",
                rng.below(100_000),
                rng.pick(&WORDS),
                rng.pick(&WORDS),
                rng.pick(&WORDS),
                rng.below(1000)
            );
            let line = format!(
                r#"{{"checkout_id":"{}","user_id":{user},"product_id":"{product}","payment_method":"{}","total_amount":{},"shipping_address":"{address}","billing_address":"{address}","user_agent":"{agent}","ip_address":"{ip}","datetime_occured":"{}"}}"#,
                rng.uuid(),
                rng.pick(&PAYMENTS),
                rng.price(),
                rng.time()
            );
            lines.push((false, line));
        }
    }
    for (is_click, line) in &lines {
        let ok = if *is_click {
            parse_click(line.as_bytes()).is_ok()
        } else {
            parse_checkout(line.as_bytes()).is_ok()
        };
        assert!(ok, "{line}");
    }
    for (name, want) in [
        ("clicks", Some(true)),
        ("checkouts", Some(false)),
        ("mix 2:1", None),
    ] {
        let subset: Vec<&(bool, String)> = lines
            .iter()
            .filter(|l| want.is_none_or(|w| l.0 == w))
            .collect();
        let sub_bytes: usize = subset.iter().map(|l| l.1.len() + 1).sum();
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            for (is_click, line) in &subset {
                if *is_click {
                    black_box(parse_click(black_box(line.as_bytes())).is_ok());
                } else {
                    black_box(parse_checkout(black_box(line.as_bytes())).is_ok());
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{name:<10} {:>10.0} events/s  {:>6.0} MB/s  {:>5.0} ns/event",
            subset.len() as f64 / best,
            sub_bytes as f64 / best / 1e6,
            best / subset.len() as f64 * 1e9
        );
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
