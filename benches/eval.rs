//! One evaluation of the `amount_limit` example rule, four ways, in one run:
//! - `native`: the same rule logic as a plain Rust function (the SDK built natively);
//! - `bare_wasmtime_defaults`: wasmtime with its defaults plus the pooling allocator, a new
//!   store and instance per call (what a competent embedder writes first);
//! - `bare_wasmtime_tuned`: the same with rulebox's engine settings (fuel, epochs, memory
//!   kept resident), isolating what rulebox's own code costs;
//! - `rulebox`: `Rule::evaluate`, with input projection, limits, metering, output checks.
//!
//! Run: `cargo bench -p rulebox-benches --bench eval` (prints a ratio table at the end).

use criterion::{Criterion, black_box};
use rulebox::{EngineConfig, Input, Rule};
use rulebox_sdk::Rule as _;

const GROUP: &str = "eval";
const DOC: &str = r#"{"order":{"amount":1234.5,"currency":"EUR","items":[1,2,3]},"customer":{"id":"c-1","country":"DE"}}"#;

/// The raw-wasmtime baseline: its own bindings (bench code, not the product).
mod bare {
    use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
    use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

    // The baseline needs typed bindings of its own; this is bench code, not the product.
    wasmtime::component::bindgen!({ path: "../wit", world: "rulebox:rule/rule@0.1.0", require_store_data_send: true });
    pub use self::rulebox::rule::types as wit;
    use self::rulebox::rule::{host, types};

    pub struct Bare {
        wasi: WasiCtx,
        table: ResourceTable,
    }
    impl WasiView for Bare {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }
    impl types::Host for Bare {}
    impl host::Host for Bare {
        fn log(&mut self, _: types::LogLevel, _: String) {}
    }

    pub fn bare_pre(tuned: bool, bytes: &[u8]) -> RulePre<Bare> {
        let mut pool = PoolingAllocationConfig::default();
        let mut config = Config::new();
        if tuned {
            pool.linear_memory_keep_resident(256 << 10)
                .table_keep_resident(16 << 10);
            config.consume_fuel(true).epoch_interruption(true);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, bytes).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        Rule::add_to_linker::<_, HasSelf<Bare>>(&mut linker, |s| s).unwrap();
        RulePre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
    }

    pub fn bare_request() -> types::Request {
        types::Request {
            facts: vec![
                types::Fact {
                    path: "order.amount".into(),
                    value: types::Value::Float(1234.5),
                },
                types::Fact {
                    path: "order.currency".into(),
                    value: types::Value::Text("EUR".into()),
                },
            ],
            document: None,
            upstream: vec![],
            settings: r#"{"max":5000}"#.into(),
        }
    }

    pub fn bare_eval(pre: &RulePre<Bare>, tuned: bool, req: &types::Request) -> types::Verdict {
        let mut store = Store::new(
            pre.engine(),
            Bare {
                wasi: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
            },
        );
        if tuned {
            store.set_fuel(u64::MAX / 2).unwrap();
            store.set_epoch_deadline(1 << 40);
        }
        let rule = pre.instantiate(&mut store).unwrap();
        rule.call_evaluate(&mut store, req)
            .unwrap()
            .unwrap()
            .verdict
    }
}

fn benches(c: &mut Criterion) {
    let bytes = rulebox_tests::guest_bytes("amount_limit");

    let native_req = rulebox_sdk::Request::new()
        .with_fact("order.amount", 1234.5)
        .with_fact("order.currency", "EUR")
        .with_settings(serde_json::json!({"max": 5000}));
    let mut g = c.benchmark_group(GROUP);
    g.bench_function("native", |b| {
        b.iter(|| {
            amount_limit::AmountLimit::evaluate(black_box(&native_req))
                .unwrap()
                .verdict()
        })
    });

    for (name, tuned) in [
        ("bare_wasmtime_defaults", false),
        ("bare_wasmtime_tuned", true),
    ] {
        let pre = bare::bare_pre(tuned, &bytes);
        let req = bare::bare_request();
        assert!(matches!(
            bare::bare_eval(&pre, tuned, &req),
            bare::wit::Verdict::Allow
        ));
        g.bench_function(name, |b| {
            b.iter(|| bare::bare_eval(&pre, tuned, black_box(&req)))
        });
    }

    let engine = rulebox::Engine::new(EngineConfig::default()).unwrap();
    let rule = Rule::builder("amount-limit", engine.load(&bytes).unwrap())
        .reads(["order.amount", "order.currency"])
        .settings(serde_json::json!({"max": 5000}))
        .build()
        .unwrap();
    let input = Input::from_json(DOC).unwrap();
    assert!(rule.evaluate(&input).result.is_ok());
    g.bench_function("rulebox", |b| {
        b.iter(|| rule.evaluate(black_box(&input)).result.unwrap().verdict)
    });
    g.bench_function("rulebox_parse_input_too", |b| {
        b.iter(|| {
            rule.evaluate(&Input::from_json(black_box(DOC)).unwrap())
                .result
                .unwrap()
                .verdict
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    rulebox_benches::print_ratio_table(
        GROUP,
        "bare_wasmtime_defaults",
        &[
            "native",
            "bare_wasmtime_defaults",
            "bare_wasmtime_tuned",
            "rulebox",
            "rulebox_parse_input_too",
        ],
    );
    rulebox_benches::print_ratio_table(
        GROUP,
        "bare_wasmtime_tuned",
        &["bare_wasmtime_tuned", "rulebox"],
    );
}
