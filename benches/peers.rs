//! The payments policy in rulebox and in the engines a user would pick instead: zen-engine
//! (JDM), Cedar and regorus (Rego), plus plain Rust. The policies are in `benches/peers/`;
//! before any timing, every engine must give rulebox's final verdict on every input (and the
//! risk score, where the engine computes one).
//!
//! Rounds are interleaved (every engine once per round, in the same process) and the table
//! reports medians, so a noisy neighbour slows all of them alike; read the ratios.
//!
//! Run: `cargo bench -p rulebox-benches --features peers --bench peers`
//! (`PEERS_ROUNDS`, default 31; `PEERS_INPUTS`, default 64).

use rulebox::{
    Bundle, BundleResult, CacheConfig, Engine, EngineConfig, Input, LoadOptions, ResultCache,
    Verdict,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic, varied payments inputs: every branch of every rule is taken. Amounts never
/// sit on a rounding tie (x500), where engines may round differently.
fn inputs(n: usize) -> Vec<Value> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let countries = ["DE", "FR", "US", "GB", "KP", "IR", "NL"];
    let currencies = ["EUR", "USD", "GBP", "EUR", "JPY"];
    (0..n)
        .map(|_| {
            let mut amount = 10 + next(14_000) as i64;
            if amount % 1000 == 500 {
                amount += 1;
            }
            // Sanctioned countries are rarer, so the other rules decide most inputs.
            let country = countries[(next(100) % 7).min(next(7)) as usize];
            let mut input = json!({
                "order": {
                    "amount": amount,
                    "currency": currencies[next(5) as usize],
                    "items": (0..next(30)).collect::<Vec<u64>>(),
                },
                "customer": {
                    "country": country,
                    "age_days": next(1000),
                    "verified": next(3) != 0,
                },
            });
            if next(3) == 0 {
                input["payment"] = json!({ "beneficiary_country": countries[next(7) as usize] });
            }
            input
        })
        .collect()
}

/// The same policy as plain Rust over the parsed input: the floor.
fn native(input: &Value) -> (Verdict, f64) {
    let amount = input["order"]["amount"].as_f64().unwrap();
    let currency = input["order"]["currency"].as_str().unwrap_or("");
    let amount_verdict = if !["EUR", "USD", "GBP"].contains(&currency) || amount > 10000.0 {
        Verdict::Deny
    } else if amount > 5000.0 {
        Verdict::Review
    } else {
        Verdict::Allow
    };
    let listed = |v: &Value| {
        v.as_str()
            .is_some_and(|c| ["KP", "IR", "SY", "CU"].contains(&c.to_ascii_uppercase().as_str()))
    };
    let sanctioned =
        listed(&input["customer"]["country"]) || listed(&input["payment"]["beneficiary_country"]);
    let mut score = 0.0;
    if amount > 1000.0 {
        score += (amount / 1000.0).min(30.0).round();
    }
    if input["customer"]["age_days"].as_u64().unwrap_or(0) < 30 {
        score += 20.0;
    }
    if !input["customer"]["verified"].as_bool().unwrap_or(false) {
        score += 15.0;
    }
    if input["order"]["items"].as_array().map_or(0, Vec::len) > 20 {
        score += 10.0;
    }
    if amount_verdict != Verdict::Allow {
        score += 25.0;
    }
    if sanctioned {
        score += 100.0;
    }
    let score = f64::min(score, 100.0);
    let verdict = if amount_verdict == Verdict::Deny || sanctioned || score >= 80.0 {
        Verdict::Deny
    } else if amount_verdict == Verdict::Review || score >= 50.0 {
        Verdict::Review
    } else {
        Verdict::Allow
    };
    (verdict, score)
}

fn parse_verdict(s: &str) -> Verdict {
    match s {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        "review" => Verdict::Review,
        other => panic!("verdict {other}"),
    }
}

struct Regorus {
    engine: regorus::Engine,
    verdict: String,
    score: String,
}

impl Regorus {
    fn new() -> Regorus {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(
                "payments.rego".into(),
                include_str!("peers/payments.rego").into(),
            )
            .unwrap();
        Regorus {
            engine,
            verdict: "data.payments.verdict".into(),
            score: "data.payments.score".into(),
        }
    }

    fn decide(&mut self, input: &str, with_score: bool) -> (Verdict, Option<f64>) {
        self.engine
            .set_input(regorus::Value::from_json_str(input).unwrap());
        let verdict = self.engine.eval_rule(self.verdict.clone()).unwrap();
        let verdict = parse_verdict(verdict.as_string().unwrap());
        let score = with_score.then(|| {
            let v = self.engine.eval_rule(self.score.clone()).unwrap();
            v.to_json_str().unwrap().parse::<f64>().unwrap()
        });
        (verdict, score)
    }
}

struct Cedar {
    authorizer: cedar_policy::Authorizer,
    policies: cedar_policy::PolicySet,
    entities: cedar_policy::Entities,
    principal: cedar_policy::EntityUid,
    resource: cedar_policy::EntityUid,
    pay: cedar_policy::EntityUid,
    unreviewed: cedar_policy::EntityUid,
}

impl Cedar {
    fn new() -> Cedar {
        let uid = |s: &str| s.parse::<cedar_policy::EntityUid>().unwrap();
        Cedar {
            authorizer: cedar_policy::Authorizer::new(),
            policies: include_str!("peers/payments.cedar").parse().unwrap(),
            entities: cedar_policy::Entities::empty(),
            principal: uid(r#"Customer::"c""#),
            resource: uid(r#"Payment::"p""#),
            pay: uid(r#"Action::"pay""#),
            unreviewed: uid(r#"Action::"pay-unreviewed""#),
        }
    }

    fn decide(&self, input: &Value) -> Verdict {
        // What Cedar cannot compute itself (see payments.cedar), flattened into its context.
        let amount = input["order"]["amount"].as_i64().unwrap();
        let mut context = json!({
            "amount": amount,
            "amount_points": (amount as f64 / 1000.0).min(30.0).round() as i64,
            "currency": input["order"]["currency"],
            "items": input["order"]["items"].as_array().map_or(0, Vec::len),
            "country": input["customer"]["country"],
            "age_days": input["customer"]["age_days"].as_i64().unwrap_or(0),
            "verified": input["customer"]["verified"].as_bool().unwrap_or(false),
        });
        if let Some(b) = input["payment"]["beneficiary_country"].as_str() {
            context["beneficiary_country"] = json!(b);
        }
        let context = cedar_policy::Context::from_json_value(context, None).unwrap();
        let ask = |action: &cedar_policy::EntityUid| {
            let request = cedar_policy::Request::new(
                self.principal.clone(),
                action.clone(),
                self.resource.clone(),
                context.clone(),
                None,
            )
            .unwrap();
            self.authorizer
                .is_authorized(&request, &self.policies, &self.entities)
                .decision()
                == cedar_policy::Decision::Allow
        };
        if !ask(&self.pay) {
            Verdict::Deny
        } else if !ask(&self.unreviewed) {
            Verdict::Review
        } else {
            Verdict::Allow
        }
    }
}

struct Zen {
    decision: zen_engine::Decision,
}

impl Zen {
    fn new() -> Zen {
        let content: zen_engine::model::DecisionContent =
            serde_json::from_str(include_str!("peers/payments.jdm.json")).unwrap();
        let decision = zen_engine::DecisionEngine::default()
            .create_decision(Arc::new(content))
            .unwrap();
        Zen { decision }
    }

    fn decide(&self, input: &Value) -> (Verdict, f64) {
        let context = zen_engine::Variable::from(input.clone());
        let future = self.decision.evaluate(context);
        // Expression nodes never wait: the future is ready on first poll.
        let response = futures_util::FutureExt::now_or_never(future)
            .expect("a JDM graph of expression nodes completes at once")
            .unwrap();
        let out: Value = response.result.to_value();
        (
            parse_verdict(out["verdict"].as_str().unwrap()),
            out["score"].as_f64().unwrap(),
        )
    }
}

/// The payments bundle assembled by `plugins/build.sh`, copied with every rule in `isolation`
/// and, when `cached`, the sanctions rule given an explicit cache policy (a rule with a grant
/// is left out of the bundle default).
fn payments(isolation: &str, cached: bool) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/bundles/payments");
    assert!(
        src.join("bundle.toml").exists(),
        "{} is missing: run plugins/build.sh",
        src.display()
    );
    let dir = tempfile::tempdir().unwrap();
    rulebox_tests::copy_dir(&src, dir.path());
    let manifest = std::fs::read_to_string(dir.path().join("bundle.toml")).unwrap();
    let mut out = String::new();
    for line in manifest.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("component = ") {
            out.push_str(&format!("isolation = \"{isolation}\"\n"));
            if cached && line.contains("sanctions") {
                out.push_str("cache = { strategy = \"intelligent\", ttl_ms = 600000 }\n");
            }
        }
    }
    std::fs::write(dir.path().join("bundle.toml"), out).unwrap();
    dir
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One timed row: a closure that decides every input once.
struct Row<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    ns: Vec<f64>,
}

fn row<'a>(name: &'static str, run: impl FnMut() + 'a) -> Row<'a> {
    Row {
        name,
        run: Box::new(run),
        ns: Vec::new(),
    }
}

fn main() {
    // Under `cargo bench`, the harness passes --bench; under `cargo test --benches`, skip.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("PEERS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let n: usize = std::env::var("PEERS_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let values = inputs(n);
    let texts: Vec<String> = values.iter().map(Value::to_string).collect();
    let parsed: Arc<Vec<Input>> =
        Arc::new(texts.iter().map(|t| Input::from_json(t).unwrap()).collect());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let load = |isolation: &str, cache: Option<Arc<ResultCache>>| {
        let dir = payments(isolation, cache.is_some());
        let options = LoadOptions {
            cache,
            ..LoadOptions::default()
        };
        let bundle = Arc::new(Bundle::load(&engine, dir.path(), &options).unwrap());
        (dir, bundle)
    };
    let (_d1, fresh) = load("fresh", None);
    let (_d2, warm) = load("reuse", None);
    let cache = Arc::new(ResultCache::new(CacheConfig::default()).unwrap());
    let (_d3, cached) = load("fresh", Some(cache.clone()));
    assert!(
        cached.rules().iter().all(|r| r.is_cached()),
        "{:?}",
        cached.describe().rules
    );

    // Agreement first: every engine against rulebox's final verdict, on every input.
    let mut regorus = Regorus::new();
    let cedar = Cedar::new();
    let zen = Zen::new();
    let score_of = |r: &BundleResult| {
        r.rules
            .iter()
            .find(|e| &*e.rule == "risk")
            .and_then(|e| e.result.as_ref().ok())
            .and_then(|d| d.score)
            .unwrap()
    };
    let mut tally = std::collections::BTreeMap::<&str, usize>::new();
    for (i, input) in parsed.iter().enumerate() {
        let r = fresh.evaluate_sequential(input).unwrap();
        let (verdict, score) = (r.verdict, score_of(&r));
        *tally.entry(verdict.as_str()).or_default() += 1;
        let what = &texts[i];
        assert_eq!(native(&values[i]), (verdict, score), "native on {what}");
        assert_eq!(
            regorus.decide(what, true),
            (verdict, Some(score)),
            "regorus on {what}"
        );
        assert_eq!(cedar.decide(&values[i]), verdict, "cedar on {what}");
        assert_eq!(zen.decide(&values[i]), (verdict, score), "zen on {what}");
        for (name, b) in [("warm", &warm), ("cached", &cached)] {
            let other = rt.block_on(b.evaluate(input)).unwrap();
            assert_eq!(
                (other.verdict, score_of(&other)),
                (verdict, score),
                "{name} on {what}"
            );
        }
    }
    println!("{n} inputs, all engines agree; rulebox's verdicts: {tally:?}");

    let amount_rule = fresh.rules()[0].rule.clone();
    let sanctions_rule = fresh.rules()[1].rule.clone();
    let each = |f: &dyn Fn(&Input)| {
        for input in parsed.iter() {
            f(input);
        }
    };
    // The async API from inside a task (`block_on`'s, on this thread, like every other
    // row: moving between threads would charge cold CPU caches to whichever row ran
    // next), one input after another. The "block_on per call" row adds entering the
    // runtime from a plain thread on every decision; a second table, below, measures from
    // a task on one of the runtime's workers.
    let in_task = |bundle: &Arc<Bundle>| {
        rt.block_on(async {
            for input in parsed.iter() {
                drop(bundle.evaluate(input).await);
            }
        })
    };
    let mut rows: Vec<Row> = vec![
        row("native Rust", || {
            for v in &values {
                std::hint::black_box(native(v));
            }
        }),
        row("zen-engine", || {
            for v in &values {
                std::hint::black_box(zen.decide(v));
            }
        }),
        row("Cedar", || {
            for v in &values {
                std::hint::black_box(cedar.decide(v));
            }
        }),
        row("regorus", || {
            for t in &texts {
                std::hint::black_box(regorus.decide(t, false));
            }
        }),
        row("rulebox evaluate (async, fresh, uncached)", || {
            in_task(&fresh)
        }),
        row("rulebox evaluate_sequential (fresh, uncached)", || {
            each(&|i| drop(fresh.evaluate_sequential(i)))
        }),
        row("rulebox evaluate_blocking (fresh, uncached)", || {
            each(&|i| drop(fresh.evaluate_blocking(i)))
        }),
        row("rulebox evaluate (async, warm, uncached)", || {
            in_task(&warm)
        }),
        row("rulebox evaluate_sequential (warm, uncached)", || {
            each(&|i| drop(warm.evaluate_sequential(i)))
        }),
        row("rulebox evaluate (block_on per call, all cached)", || {
            each(&|i| drop(rt.block_on(cached.evaluate(i))))
        }),
        row("rulebox evaluate (async, all cached)", || in_task(&cached)),
        row("rulebox evaluate_sequential (all cached)", || {
            each(&|i| drop(cached.evaluate_sequential(i)))
        }),
        row("rule: amount-limit alone (fresh)", || {
            each(&|i| drop(amount_rule.evaluate(i)))
        }),
        row("rule: sanctions alone (fresh)", || {
            each(&|i| drop(sanctions_rule.evaluate(i)))
        }),
    ];
    // PEERS_PROFILE=<part of a row's name>: run only that row, for 10 s, to profile it
    // (`perf record -g target/release/deps/peers-* --bench`).
    if let Ok(only) = std::env::var("PEERS_PROFILE") {
        let row = rows
            .iter_mut()
            .find(|r| r.name.contains(only.as_str()))
            .unwrap_or_else(|| panic!("PEERS_PROFILE={only}: no row by that name"));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            (row.run)();
        }
        return;
    }
    // One untimed round warms every path (instances, caches, branch predictors).
    for row in &mut rows {
        (row.run)();
    }
    // Each round in its own shuffled order: a row run after another engine's or another
    // bundle's finds the CPU caches cold (measured: ~2 us of 4 on the cached rows). A fixed
    // order, even started at a different row each round, gives each row the same
    // predecessor almost every time, so the first rulebox row always paid for regorus'
    // footprint and the one after it ran warm.
    let mut shuffled = rulebox_benches::Rounds::new(rows.len());
    for _ in 0..rounds {
        for &i in shuffled.next_order() {
            let row = &mut rows[i];
            let start = Instant::now();
            (row.run)();
            row.ns
                .push(start.elapsed().as_nanos() as f64 / parsed.len() as f64);
        }
    }
    let medians: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| (r.name, median(r.ns.clone())))
        .collect();
    let of = |name: &str| medians.iter().find(|(n, _)| *n == name).unwrap().1;
    let (zen_ns, cedar_ns, rego_ns) = (of("zen-engine"), of("Cedar"), of("regorus"));
    println!("\nns per decision, median of {rounds} interleaved rounds of {n} inputs:\n");
    println!(
        "| {:<50} | {:>10} | {:>8} | {:>8} | {:>8} |",
        "engine / path", "ns", "/ zen", "/ Cedar", "/ regorus"
    );
    println!(
        "| {:-<50} | {:->10} | {:->8} | {:->8} | {:->8} |",
        "", "", "", "", ""
    );
    for (name, ns) in &medians {
        println!(
            "| {name:<50} | {ns:>10.0} | {:>8.2} | {:>8.2} | {:>8.2} |",
            ns / zen_ns,
            ns / cedar_ns,
            ns / rego_ns
        );
    }
    let ratio = |a: &str, b: &str| of(a) / of(b);
    println!("\ntargets:");
    println!(
        "  uncached async / regorus: {:.2} (target <= 1)",
        ratio("rulebox evaluate (async, fresh, uncached)", "regorus")
    );
    println!(
        "  all cached, async / sequential lookups: {:.2} (target <= 1.3); / zen: {:.2} (target < 1)",
        ratio(
            "rulebox evaluate (async, all cached)",
            "rulebox evaluate_sequential (all cached)"
        ),
        ratio("rulebox evaluate (async, all cached)", "zen-engine")
    );
    println!(
        "  warm async / zen: {:.2}; warm sequential / zen: {:.2} (target < 1)",
        ratio("rulebox evaluate (async, warm, uncached)", "zen-engine"),
        ratio("rulebox evaluate_sequential (warm, uncached)", "zen-engine")
    );
    println!(
        "  sanctions / amount-limit: {:.2} (target <= 1.5)",
        ratio(
            "rule: sanctions alone (fresh)",
            "rule: amount-limit alone (fresh)"
        )
    );

    on_a_worker(&rt, &warm, &cached, &parsed, rounds);
}

/// The async API against sequential evaluation, both from a task on one of the runtime's
/// workers, as a service calls them (there `block_in_place`, which a layer of rules that
/// import WASI needs, hands the worker's other tasks to another thread). Measured after the
/// main table, in one task, so no other row shares its threads.
fn on_a_worker(
    rt: &tokio::runtime::Runtime,
    warm: &Arc<Bundle>,
    cached: &Arc<Bundle>,
    parsed: &Arc<Vec<Input>>,
    rounds: usize,
) {
    let (warm, cached, parsed) = (warm.clone(), cached.clone(), parsed.clone());
    let medians = rt
        .block_on(rt.spawn(async move {
            let mut ns: [Vec<f64>; 4] = Default::default();
            // Shuffled, as in the main table: in a rotation each row nearly always follows
            // the same one, and the row after the other bundle's starts cold.
            let mut shuffled = rulebox_benches::Rounds::new(4);
            for round in 0..=rounds {
                for &k in shuffled.next_order() {
                    let bundle = if k < 2 { &warm } else { &cached };
                    let start = Instant::now();
                    for input in parsed.iter() {
                        if k % 2 == 0 {
                            drop(bundle.evaluate(input).await);
                        } else {
                            drop(bundle.evaluate_sequential(input));
                        }
                    }
                    // Round 0 warms up.
                    if round > 0 {
                        ns[k].push(start.elapsed().as_nanos() as f64 / parsed.len() as f64);
                    }
                }
            }
            ns.map(median)
        }))
        .unwrap();
    println!(
        "
from a task on a runtime worker (ns per decision, median of {rounds} rounds):"
    );
    println!(
        "  warm: async {:.0}, sequential {:.0} ({:.2}x)",
        medians[0],
        medians[1],
        medians[0] / medians[1]
    );
    println!(
        "  all cached: async {:.0}, sequential {:.0} ({:.2}x, target <= 1.3)",
        medians[2],
        medians[3],
        medians[2] / medians[3]
    );
}
