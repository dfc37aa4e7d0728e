//! A rule: a compiled component plus its configuration (what it reads, its settings, grants
//! and limits), and the evaluation of one input in a fresh, metered sandbox.

use crate::bindings::types;
use crate::config::{Limits, LimitsOverride};
use crate::engine::RulePre;
use crate::error::{ConfigError, ErrorKind, EvalError};
use crate::input::{Input, Reads};
use crate::sandbox::{Capture, Limiter, RuleLog, StoreState, truncate};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What a rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Stop it.
    Deny,
    /// Send it to a person.
    Review,
    /// No opinion: the rule does not apply.
    Abstain,
}

impl Verdict {
    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Review => "review",
            Verdict::Abstain => "abstain",
        }
    }
}

/// A rule's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// An optional score (risk, confidence, ...); always finite.
    pub score: Option<f64>,
    /// Human-readable reasons.
    pub reasons: Vec<String>,
    /// Extra result data, handed to dependent rules and returned to the caller.
    pub output: Option<serde_json::Value>,
}

impl Decision {
    /// A decision with this verdict and nothing else.
    pub fn new(verdict: Verdict) -> Decision {
        Decision {
            verdict,
            score: None,
            reasons: Vec::new(),
            output: None,
        }
    }

    fn to_wit(&self) -> types::Decision {
        types::Decision {
            verdict: match self.verdict {
                Verdict::Allow => types::Verdict::Allow,
                Verdict::Deny => types::Verdict::Deny,
                Verdict::Review => types::Verdict::Review,
                Verdict::Abstain => types::Verdict::Abstain,
            },
            score: self.score,
            reasons: self.reasons.clone(),
            output: self.output.as_ref().map(|v| v.to_string()),
        }
    }

    /// Checks and converts what the guest returned.
    fn from_wit(d: types::Decision, output_limit: usize) -> Result<Decision, EvalError> {
        let size = d.reasons.iter().map(String::len).sum::<usize>()
            + d.output.as_ref().map_or(0, String::len);
        if size > output_limit {
            return Err(EvalError::OutputTooLarge {
                size,
                limit: output_limit,
            });
        }
        if let Some(score) = d.score
            && !score.is_finite()
        {
            return Err(EvalError::InvalidOutput(format!(
                "score {score} is not a finite number"
            )));
        }
        let output = match d.output {
            None => None,
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                EvalError::InvalidOutput(format!(
                    "output is not JSON ({e}): {}",
                    truncate(text, 80)
                ))
            })?),
        };
        Ok(Decision {
            verdict: match d.verdict {
                types::Verdict::Allow => Verdict::Allow,
                types::Verdict::Deny => Verdict::Deny,
                types::Verdict::Review => Verdict::Review,
                types::Verdict::Abstain => Verdict::Abstain,
            },
            score: d.score,
            reasons: d.reasons,
            output,
        })
    }
}

/// The decision of a rule this rule depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// The upstream rule's name.
    pub rule: String,
    /// What it decided.
    pub decision: Decision,
}

/// What one evaluation cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metering {
    /// Fuel burnt (roughly, Wasm instructions executed).
    pub fuel: u64,
    /// Wall time from sandbox creation to the checked result, in microseconds.
    pub wall_us: u64,
    /// CPU time the evaluation's thread used, in microseconds: what the deadline counts.
    /// Far below `wall_us` means the host was busy, not the rule slow. Within 50 us of the
    /// kernel's figure: the thread's CPU clock is read from the kernel at most once per
    /// 50 us of wall time and interpolated in between, since a read costs about what a
    /// short rule does.
    #[serde(default)]
    pub cpu_us: u64,
    /// Time spent waiting for an evaluation slot, in microseconds (host load, not the rule).
    #[serde(default)]
    pub queue_us: u64,
    /// Peak linear memory of the instance, in bytes.
    pub memory_peak_bytes: u64,
}

/// The result of one evaluation: a decision or an error, and what it cost either way.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The decision, or why there is none.
    pub result: Result<Decision, EvalError>,
    /// What it cost (for a cached result: what serving it cost, no fuel).
    pub metering: Metering,
    /// Whether this result was served from the result cache.
    pub cached: bool,
    /// Whether the rule read a clock: its result then depends on more than its inputs and
    /// is never cached.
    pub read_clock: bool,
}

impl Evaluation {
    /// An evaluation that never ran: `error` says why (an incompatible component, say).
    pub fn failed(rule: impl Into<Arc<str>>, error: EvalError) -> Evaluation {
        Evaluation {
            rule: rule.into(),
            result: Err(error),
            metering: Metering::default(),
            cached: false,
            read_clock: false,
        }
    }

    /// The JSON form (see the `Serialize` impl) as a value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The JSON form used by `rulebox eval` and the server: `rule`, `ok`, `cached`, `metering`,
/// then `decision` or `error {kind, message}`.
impl Serialize for Evaluation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("rule", &*self.rule)?;
        map.serialize_entry("ok", &self.result.is_ok())?;
        map.serialize_entry("cached", &self.cached)?;
        map.serialize_entry("metering", &self.metering)?;
        match &self.result {
            Ok(d) => map.serialize_entry("decision", d)?,
            Err(e) => map.serialize_entry("error", e)?,
        }
        map.end()
    }
}

/// A read-only directory the rule may read, opened with cap-std: nothing outside it is
/// reachable through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the rule sees it (e.g. `/data`).
    pub guest: String,
}

impl Grant {
    /// Parses `HOST_DIR:GUEST_DIR`.
    pub fn parse(spec: &str) -> Result<Grant, ConfigError> {
        let (host, guest) = spec.rsplit_once(':').ok_or_else(|| {
            ConfigError::new("grant", format!("`{spec}` is not HOST_DIR:GUEST_DIR"))
        })?;
        Ok(Grant {
            host: host.into(),
            guest: guest.to_owned(),
        })
    }
}

/// How a rule's evaluations are isolated from one another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Every evaluation gets a fresh instance: nothing one input leaves in memory can reach
    /// the next. The default.
    #[default]
    Fresh,
    /// Evaluations reuse an instance (one per worker) for up to
    /// [`Isolation::DEFAULT_REUSE_LIMIT`] evaluations (or the rule's `reuse_limit`; each
    /// instance between 7/8 of it and all of it, so that a bundle's rules are not all
    /// replaced in the same evaluation), and drop it on any error, trap or limit. Fuel,
    /// deadline and memory cap still apply to every call. Weaker: state a rule keeps in memory (globals, caches, a leak) persists between
    /// evaluations of that rule, so one input can influence the answer to the next. For rules
    /// whose authors and inputs are trusted to that degree, about 10x cheaper per evaluation.
    Reuse,
}

impl Isolation {
    /// Evaluations one reused instance answers before it is replaced, unless the rule says.
    pub const DEFAULT_REUSE_LIMIT: u32 = 1000;

    /// The lower-case name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Fresh => "fresh",
            Isolation::Reuse => "reuse",
        }
    }
}

/// A rule ready to evaluate: a [`RulePre`] plus its configuration. Cheap to clone, `Send` and
/// `Sync`: evaluate it from as many threads as you like; each evaluation gets its own
/// instance.
#[derive(Clone)]
pub struct Rule {
    inner: Arc<RuleInner>,
}

struct RuleInner {
    config: RuleConfig,
    /// Idle instances, for [`Isolation::Reuse`].
    warm: Option<WarmPool>,
}

/// Everything that configures a rule; [`Rule::with_limits`] copies it.
#[derive(Clone)]
struct RuleConfig {
    name: Arc<str>,
    pre: RulePre,
    reads: Reads,
    settings: String,
    /// Its grants, shared with every sandbox that gets them.
    grants: Arc<[crate::sandbox::GrantDir]>,
    limits: Limits,
    isolation: Isolation,
    reuse_limit: u32,
}

impl std::ops::Deref for RuleInner {
    type Target = RuleConfig;
    fn deref(&self) -> &RuleConfig {
        &self.config
    }
}

impl RuleInner {
    fn new(config: RuleConfig) -> RuleInner {
        let warm = (config.isolation == Isolation::Reuse).then(|| WarmPool {
            idle: Default::default(),
            max_uses: config.reuse_limit,
            created: Default::default(),
            max_idle: config.pre.engine().config().max_concurrent_evaluations,
            engine: config.pre.engine().clone(),
        });
        RuleInner { config, warm }
    }
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.pre.digest_hex())
            .field("reads", &self.inner.reads)
            .field("limits", &self.inner.limits)
            .field("isolation", &self.inner.isolation)
            .finish()
    }
}

/// Configures a [`Rule`].
pub struct RuleBuilder {
    name: String,
    pre: RulePre,
    reads: Vec<String>,
    settings: serde_json::Value,
    grants: Vec<Grant>,
    limits: LimitsOverride,
    isolation: Isolation,
    reuse_limit: u32,
}

impl RuleBuilder {
    /// How evaluations are isolated from one another. Default [`Isolation::Fresh`].
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// With [`Isolation::Reuse`], evaluations one instance answers before it is replaced.
    /// Default [`Isolation::DEFAULT_REUSE_LIMIT`].
    pub fn reuse_limit(mut self, evaluations: u32) -> Self {
        self.reuse_limit = evaluations;
        self
    }

    /// The JSON paths the rule reads (`["*"]` for the whole document). Default: none.
    pub fn reads<S: Into<String>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        self.reads = paths.into_iter().map(Into::into).collect();
        self
    }

    /// The rule's settings; must be a JSON object. Default `{}`.
    pub fn settings(mut self, settings: serde_json::Value) -> Self {
        self.settings = settings;
        self
    }

    /// Adds a read-only directory grant.
    pub fn grant(mut self, grant: Grant) -> Self {
        self.grants.push(grant);
        self
    }

    /// Overrides some of the engine's default limits.
    pub fn limits(mut self, limits: LimitsOverride) -> Self {
        self.limits = limits;
        self
    }

    /// Validates everything, naming the field at fault.
    pub fn build(self) -> Result<Rule, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        let reads = Reads::parse(&self.reads)?;
        if !self.settings.is_object() {
            return Err(ConfigError::new("settings", "must be a JSON object"));
        }
        for (i, g) in self.grants.iter().enumerate() {
            if !g.host.is_dir() {
                return Err(ConfigError::new(
                    format!("grants[{i}]"),
                    format!("`{}` is not a directory", g.host.display()),
                ));
            }
            if !g.guest.starts_with('/') || g.guest.split('/').any(|s| s == "..") {
                return Err(ConfigError::new(
                    format!("grants[{i}]"),
                    format!("guest path `{}` must be absolute, without `..`", g.guest),
                ));
            }
        }
        if self.reuse_limit == 0 {
            return Err(ConfigError::new("reuse_limit", "must be greater than 0"));
        }
        let engine = self.pre.engine().config();
        let limits = engine.default_limits.with(&self.limits);
        limits.check_within(&engine.max_limits, "limits.")?;
        let mut config = RuleConfig {
            name: self.name.into(),
            pre: self.pre,
            reads,
            settings: self.settings.to_string(),
            grants: self.grants.into_iter().map(|g| (g.host, g.guest)).collect(),
            limits,
            isolation: self.isolation,
            reuse_limit: self.reuse_limit,
        };
        if let Some(source) = config.pre.init_source().cloned() {
            config.pre = initialize(&config, &source).map_err(|m| ConfigError::new("init", m))?;
        }
        Ok(Rule {
            inner: Arc::new(RuleInner::new(config)),
        })
    }
}

impl Rule {
    /// Starts configuring a rule named `name` around a compiled component.
    pub fn builder(name: impl Into<String>, pre: RulePre) -> RuleBuilder {
        RuleBuilder {
            name: name.into(),
            pre,
            reads: Vec::new(),
            settings: serde_json::json!({}),
            grants: Vec::new(),
            limits: LimitsOverride::default(),
            isolation: Isolation::Fresh,
            reuse_limit: Isolation::DEFAULT_REUSE_LIMIT,
        }
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the rule reads.
    pub fn reads(&self) -> &Reads {
        &self.inner.reads
    }

    /// The compiled component.
    pub fn pre(&self) -> &RulePre {
        &self.inner.pre
    }

    /// The settings, as JSON text.
    pub fn settings_json(&self) -> &str {
        &self.inner.settings
    }

    /// The limits each evaluation runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// How its evaluations are isolated from one another.
    pub fn isolation(&self) -> Isolation {
        self.inner.isolation
    }

    /// The same rule with some limits changed (for one call, say); checked against the
    /// engine's maxima.
    pub fn with_limits(&self, over: &LimitsOverride) -> Result<Rule, ConfigError> {
        let limits = self.inner.limits.with(over);
        limits.check_within(&self.inner.pre.engine().config().max_limits, "limits.")?;
        Ok(Rule {
            inner: Arc::new(RuleInner::new(RuleConfig {
                limits,
                ..self.inner.config.clone()
            })),
        })
    }

    /// Evaluates one input in a fresh sandbox.
    pub fn evaluate(&self, input: &Input) -> Evaluation {
        self.evaluate_with(input, &[])
    }

    /// Evaluates one input, handing the rule the decisions of the rules it depends on.
    pub fn evaluate_with(&self, input: &Input, upstream: &[Upstream]) -> Evaluation {
        let rule = &*self.inner;
        let span = tracing::info_span!(
            "evaluate",
            rule = &*rule.name,
            outcome = tracing::field::Empty,
            fuel = tracing::field::Empty,
            wall_us = tracing::field::Empty,
        );
        let _enter = span.enter();
        let queued = Instant::now();
        let engine = rule.pre.engine();
        let Some(_permit) = engine.admit() else {
            engine.note_overloaded();
            let waited = queued.elapsed();
            span.record("outcome", ErrorKind::Overloaded.as_str());
            return Evaluation {
                rule: rule.name.clone(),
                result: Err(EvalError::Overloaded(format!(
                    "no evaluation slot within {} ms ({} running engine-wide)",
                    waited.as_millis(),
                    engine.config().max_concurrent_evaluations
                ))),
                metering: Metering {
                    queue_us: waited.as_micros() as u64,
                    ..Metering::default()
                },
                cached: false,
                read_clock: false,
            };
        };
        let queue_us = queued.elapsed().as_micros() as u64;
        let start = Instant::now();
        let (result, fuel, memory_peak, cpu, read_clock) = self.run(input, upstream);
        let metering = Metering {
            fuel,
            wall_us: start.elapsed().as_micros() as u64,
            memory_peak_bytes: memory_peak as u64,
            cpu_us: cpu.as_micros() as u64,
            queue_us,
        };
        match &result {
            Ok(d) => span.record("outcome", d.verdict.as_str()),
            Err(e) => span.record("outcome", e.kind().as_str()),
        };
        if matches!(result, Err(EvalError::Overloaded(_))) {
            engine.note_overloaded();
        }
        span.record("fuel", metering.fuel);
        span.record("wall_us", metering.wall_us);
        Evaluation {
            rule: rule.name.clone(),
            result,
            metering,
            cached: false,
            read_clock,
        }
    }

    fn run(&self, input: &Input, upstream: &[Upstream]) -> Ran {
        let rule = &*self.inner;
        let request = types::Request {
            facts: input.facts(&rule.reads),
            document: matches!(rule.reads, Reads::All).then(|| input.text().to_owned()),
            upstream: upstream
                .iter()
                .map(|u| types::Upstream {
                    rule: u.rule.clone(),
                    decision: u.decision.to_wit(),
                })
                .collect(),
            settings: rule.settings.clone(),
        };
        let Some(pool) = &rule.warm else {
            let (mut sandbox, instance) = match Sandbox::instantiate(rule) {
                Ok(ready) => ready,
                Err(ran) => return *ran,
            };
            let called = instance.call_evaluate(&mut sandbox.store, &request);
            return sandbox.finish(rule, called);
        };
        let mut warm = match pool.take() {
            Some(mut warm) => {
                warm.sandbox.start(&rule.limits);
                warm
            }
            None => match Sandbox::instantiate(rule) {
                Ok((sandbox, instance)) => Warm {
                    sandbox,
                    instance,
                    uses: 0,
                    limit: staggered_limit(
                        pool.max_uses,
                        pool.created.fetch_add(1, Ordering::Relaxed),
                    ),
                },
                Err(ran) => return *ran,
            },
        };
        let called = warm
            .instance
            .call_evaluate(&mut warm.sandbox.store, &request);
        let ran = warm.sandbox.finish(rule, called);
        warm.uses += 1;
        // Any error, trap or limit ends the instance: whatever state it left behind must not
        // reach the next input.
        if ran.0.is_ok() {
            pool.give_back(warm);
        }
        ran
    }
}

/// What running a rule gave: the result, fuel burnt, peak memory, CPU time, and whether it
/// read a clock.
type Ran = (Result<Decision, EvalError>, u64, usize, Duration, bool);

/// A store ready for one call of a rule: WASI with captured stdio and watched clocks, the
/// limiter, fuel, and the deadline. A fresh rule gets one per evaluation; a rule with
/// [`Isolation::Reuse`] keeps one (with its instance) across evaluations.
struct Sandbox {
    store: Store<StoreState>,
    stdout: Capture,
    stderr: Capture,
    read_clock: Arc<AtomicBool>,
    tick_ms: u64,
}

impl Sandbox {
    /// A fresh sandbox, armed for a call, with the rule instantiated in it; or, when that
    /// fails, what the evaluation gave.
    fn instantiate(rule: &RuleConfig) -> Result<(Sandbox, crate::bindings::Rule), Box<Ran>> {
        let mut sandbox =
            Sandbox::new(rule).map_err(|e| Box::new((Err(e), 0, 0, Duration::ZERO, false)))?;
        sandbox.start(&rule.limits);
        match rule.pre.pre().instantiate(&mut sandbox.store) {
            Ok(instance) => Ok((sandbox, instance)),
            Err(e) => Err(Box::new(sandbox.finish(rule, Err(e)))),
        }
    }

    fn new(rule: &RuleConfig) -> Result<Sandbox, EvalError> {
        let engine = rule.pre.engine();
        let capture_bytes = engine.config().stdio_capture_bytes;
        let stdout = Capture::new(capture_bytes);
        let stderr = Capture::new(capture_bytes);
        let read_clock = Arc::new(AtomicBool::new(false));

        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(WatchedClock(read_clock.clone()))
            .monotonic_clock(WatchedClock(read_clock.clone()))
            .allow_blocking_current_thread(true);
        // A pre-initialized rule read its grants when it was initialized; its evaluations
        // start from that state and get no directories.
        let grants =
            (!rule.pre.initialized() && !rule.grants.is_empty()).then(|| rule.grants.clone());
        // The same directories through WASI and through `rulebox:rule/grants`.
        for (host, guest) in grants.as_deref().unwrap_or_default() {
            if let Err(e) = wasi.preopened_dir(host, guest, FsPerms::ReadOnly) {
                return Err(EvalError::Trap {
                    message: format!("cannot open grant `{}`: {e:#}", host.display()),
                    detail: None,
                });
            }
        }
        let limits = rule.limits;
        let now = Instant::now();
        let state = StoreState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes),
            log: RuleLog::new(rule.name.clone()),
            deadline: now + limits.timeout(),
            slept_past_deadline: false,
            started: now,
            cpu_start: Duration::ZERO,
            grants,
            grant_read_bytes: limits.memory_bytes as u64,
        };
        let mut store = Store::new(engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // The epoch deadline is wall time; when it passes, charge what the thread actually
        // ran. Time the host gave to other threads is not the rule's: extend by what is left,
        // up to the starvation backstop.
        let tick = engine.config().epoch_tick_ms;
        let backstop =
            limits.timeout() + Duration::from_millis(engine.config().starvation_grace_ms);
        store.epoch_deadline_callback(move |store| {
            let state = store.data();
            // Once a tick at most: the kernel's figure.
            let cpu = crate::cpu::thread_cpu_exact(Instant::now()).saturating_sub(state.cpu_start);
            if cpu >= limits.timeout() {
                return Err(wasmtime::Error::new(CpuDeadline));
            }
            let wall = state.started.elapsed();
            if wall >= backstop {
                return Err(wasmtime::Error::new(Starved { cpu, wall }));
            }
            let left = (limits.timeout() - cpu).as_millis() as u64;
            Ok(wasmtime::UpdateDeadline::Continue(
                left.div_ceil(tick).max(1),
            ))
        });
        Ok(Sandbox {
            store,
            stdout,
            stderr,
            read_clock,
            tick_ms: tick,
        })
    }

    /// Arms fuel, deadline and per-call state for the next call.
    fn start(&mut self, limits: &Limits) {
        let tick = self.tick_ms;
        let state = self.store.data_mut();
        state.started = Instant::now();
        state.cpu_start = crate::cpu::thread_cpu_at(state.started);
        state.deadline = state.started + limits.timeout();
        state.slept_past_deadline = false;
        state.limiter.refused = None;
        state.log.reset();
        self.read_clock.store(false, Ordering::Relaxed);
        // Neither call can fail: fuel and epochs are enabled on every engine we build.
        let _ = self.store.set_fuel(limits.fuel);
        self.store
            .set_epoch_deadline(limits.timeout_ms.div_ceil(tick).max(1));
    }

    /// Turns what the call returned into the evaluation's result and cost, and forwards
    /// what the guest printed.
    fn finish(
        &mut self,
        rule: &RuleConfig,
        called: wasmtime::Result<Result<types::Decision, types::RuleError>>,
    ) -> Ran {
        let limits = rule.limits;
        let tick = self.tick_ms;
        let fuel = limits.fuel - self.store.get_fuel().unwrap_or(0);
        let state = self.store.data();
        let cpu = crate::cpu::thread_cpu_at(Instant::now()).saturating_sub(state.cpu_start);
        log_stdio(&rule.name, &self.stdout, &self.stderr);
        // An answer past the deadline is a timeout, however the rule got there (a sleep that
        // outlasted it, running between two ticks): the caller was promised one or the other.
        // Running time is CPU time: a busy host delays answers but does not flip them.
        let late =
            state.slept_past_deadline || cpu > limits.timeout() + Duration::from_millis(tick);
        let result = match called {
            Ok(_) if late => Err(EvalError::Timeout {
                deadline: limits.timeout(),
            }),
            Ok(Ok(d)) => Decision::from_wit(d, limits.output_bytes),
            Ok(Err(types::RuleError::InvalidInput(m))) => {
                Err(EvalError::InvalidInput(truncate(m, limits.output_bytes)))
            }
            Ok(Err(types::RuleError::Failed(m))) => {
                Err(EvalError::Failed(truncate(m, limits.output_bytes)))
            }
            Err(e) => Err(classify(e, state, &limits, &self.stderr)),
        };
        let peak = state.limiter.peak;
        self.stdout.clear();
        self.stderr.clear();
        let read_clock = self.read_clock.load(Ordering::Relaxed);
        (result, fuel, peak, cpu, read_clock)
    }
}

/// A reused instance of a rule with [`Isolation::Reuse`], how often it has answered, and how
/// often it may ([`staggered_limit`]).
struct Warm {
    sandbox: Sandbox,
    instance: crate::bindings::Rule,
    uses: u32,
    limit: u32,
}

/// The evaluations the rule's `k`th instance may answer: between 7/8 of its `reuse_limit` and
/// all of it, consecutive instances far apart. Instances of a bundle's rules are created
/// together and used together: with the same limit, every rule would be replaced in the same
/// evaluation, which would pay every new instance's first, slower evaluation at once
/// (measured in the bundle bench: 61 us of CPU on average, over 340 new instances, for rules
/// of 1-20 us). Staggered, they are replaced one at a time.
fn staggered_limit(reuse_limit: u32, k: u32) -> u32 {
    // Fibonacci hashing of the count.
    let n = k.wrapping_mul(0x9e37_79b9) >> 8;
    reuse_limit - n % (reuse_limit / 8 + 1)
}

/// Idle instances of one rule with [`Isolation::Reuse`]: at most one per evaluation slot of
/// the engine (and, engine-wide, what `Engine::keep_warm` allows), each answering at most
/// `max_uses` evaluations.
struct WarmPool {
    idle: std::sync::Mutex<Vec<Warm>>,
    max_uses: u32,
    /// Instances created so far, for [`staggered_limit`].
    created: std::sync::atomic::AtomicU32,
    max_idle: usize,
    engine: crate::Engine,
}

impl WarmPool {
    fn take(&self) -> Option<Warm> {
        let warm = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        self.engine.release_warm(1);
        Some(warm)
    }

    fn give_back(&self, warm: Warm) {
        if warm.uses >= warm.limit {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle && self.engine.keep_warm() {
            idle.push(warm);
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        self.engine.release_warm(idle.len());
    }
}

/// Runs a rule's `init` once, with its settings and grants, under its limits, and compiles a
/// snapshot of the instance it leaves: evaluations of the returned component start from that
/// state (a fresh instance each, memory copy-on-write) and get no grants.
fn initialize(config: &RuleConfig, source: &[u8]) -> Result<RulePre, String> {
    let engine = config.pre.engine();
    let mut wizer = wasmtime_wizer::Wizer::new();
    // Kept: removing it would also strip the core module's export of the same name, which
    // the component's own `init` lift still refers to. Nothing calls it on a snapshot.
    wizer.init_func("init").keep_init_func(true);
    let (cx, instrumented) = wizer
        .instrument_component(source)
        .map_err(|e| format!("cannot prepare the component for a snapshot: {e:#}"))?;
    let component = wasmtime::component::Component::new(engine.wasmtime(), &instrumented)
        .map_err(|e| format!("cannot compile the component for init: {e:#}"))?;
    let mut sandbox = Sandbox::new(config).map_err(|e| e.to_string())?;
    sandbox.start(&config.limits);
    let instance = engine
        .linker()
        .instantiate(&mut sandbox.store, &component)
        .map_err(|e| format!("cannot instantiate: {e:#}"))?;
    let init = instance
        .get_typed_func::<(&str,), (Result<(), String>,)>(&mut sandbox.store, "init")
        .map_err(|e| format!("`init` has the wrong type: {e:#}"))?;
    let called = init.call(&mut sandbox.store, (&config.settings,));
    log_stdio(&config.name, &sandbox.stdout, &sandbox.stderr);
    match called {
        Ok((Ok(()),)) => {}
        Ok((Err(message),)) => {
            return Err(truncate(message, config.limits.output_bytes));
        }
        Err(e) => {
            let state = sandbox.store.data();
            return Err(classify(e, state, &config.limits, &sandbox.stderr).to_string());
        }
    }
    let mut state = Snapshot {
        store: &mut sandbox.store,
        instance,
    };
    // Every accessor is synchronous: the future is ready on its first poll. The accessors are
    // Wizer's own, but they run in the rule's instance: a failure is reported, not a panic.
    let snapshot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let future = std::pin::pin!(wizer.snapshot_component(&cx, &mut state));
        match future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(r) => r.map_err(|e| format!("{e:#}")),
            std::task::Poll::Pending => Err("the snapshot did not complete".into()),
        }
    }))
    .map_err(|_| "the snapshot failed".to_owned())?
    .map_err(|e| format!("cannot snapshot the initialized instance: {e}"))?;
    engine
        .load_as(&snapshot, Some(&config.pre))
        .map_err(|e| format!("the snapshot does not load: {e}"))
}

/// The instance `init` ran in, as Wizer reads it (through accessors it added).
struct Snapshot<'a> {
    store: &'a mut Store<StoreState>,
    instance: wasmtime::component::Instance,
}

impl Snapshot<'_> {
    fn call<R, T>(
        &mut self,
        instance: &str,
        func: &str,
        read: impl FnOnce(&Store<StoreState>, R) -> T,
    ) -> T
    where
        R: wasmtime::component::ComponentType + wasmtime::component::Lift + Send + Sync + 'static,
    {
        let store = &mut *self.store;
        let (_, exported) = self
            .instance
            .get_export(&mut *store, None, instance)
            .expect("wizer's accessor instance");
        let (_, index) = self
            .instance
            .get_export(&mut *store, Some(&exported), func)
            .expect("wizer's accessor");
        let f = self
            .instance
            .get_typed_func::<(), (R,)>(&mut *store, index)
            .expect("wizer's accessor type");
        let (r,) = f.call(&mut *store, ()).expect("wizer's accessor call");
        read(store, r)
    }
}

impl wasmtime_wizer::ComponentInstanceState for Snapshot<'_> {
    fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.call(
            instance,
            func,
            |store, list: wasmtime::component::WasmList<u8>| contents(list.as_le_slice(store)),
        );
        std::future::ready(())
    }

    fn call_func_ret_s32(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl std::future::Future<Output = i32> + Send {
        std::future::ready(self.call(instance, func, |_, r: i32| r))
    }

    fn call_func_ret_s64(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl std::future::Future<Output = i64> + Send {
        std::future::ready(self.call(instance, func, |_, r: i64| r))
    }

    fn call_func_ret_f32(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl std::future::Future<Output = u32> + Send {
        std::future::ready(self.call(instance, func, |_, r: f32| r.to_bits()))
    }

    fn call_func_ret_f64(
        &mut self,
        instance: &str,
        func: &str,
    ) -> impl std::future::Future<Output = u64> + Send {
        std::future::ready(self.call(instance, func, |_, r: f64| r.to_bits()))
    }
}

/// The rule used up its running time (CPU time of its thread).
#[derive(Debug)]
struct CpuDeadline;

impl std::fmt::Display for CpuDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline reached")
    }
}

impl std::error::Error for CpuDeadline {}

/// The host gave the rule too little CPU to finish within its backstop.
#[derive(Debug)]
struct Starved {
    cpu: Duration,
    wall: Duration,
}

impl std::fmt::Display for Starved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the rule got {} ms of CPU in {} ms: the host is too busy",
            self.cpu.as_millis(),
            self.wall.as_millis()
        )
    }
}

impl std::error::Error for Starved {}

/// The host's clocks, noting that the rule read one (so its result is not cached).
struct WatchedClock(Arc<AtomicBool>);

impl wasmtime_wasi::HostWallClock for WatchedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        self.0.store(true, Ordering::Relaxed);
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

impl wasmtime_wasi::HostMonotonicClock for WatchedClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.store(true, Ordering::Relaxed);
        crate::sandbox::monotonic_now()
    }
}

/// Turns a wasmtime error into the error kind a caller can act on.
fn classify(
    e: wasmtime::Error,
    state: &StoreState,
    limits: &Limits,
    stderr: &Capture,
) -> EvalError {
    // A refused growth explains whatever the guest did next (abort, unreachable, ...).
    if let Some(requested) = state.limiter.refused {
        return EvalError::MemoryLimit {
            limit: limits.memory_bytes,
            requested,
        };
    }
    if e.downcast_ref::<CpuDeadline>().is_some() {
        return EvalError::Timeout {
            deadline: limits.timeout(),
        };
    }
    if let Some(starved) = e.downcast_ref::<Starved>() {
        return EvalError::Overloaded(starved.to_string());
    }
    // Every instance slot of the engine's pool is taken: the host's condition, not the
    // rule's (a fail-closed bundle must not deny because of it).
    if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return EvalError::Overloaded(format!("no free instance: {full}"));
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EvalError::FuelExhausted {
            budget: limits.fuel,
        },
        Some(Trap::Interrupt) => EvalError::Timeout {
            deadline: Duration::from_millis(limits.timeout_ms),
        },
        Some(Trap::StackOverflow) => EvalError::StackOverflow,
        Some(trap) => EvalError::Trap {
            message: trap.to_string(),
            detail: last_words(state, stderr),
        },
        None => EvalError::Trap {
            message: format!("{e:#}"),
            detail: last_words(state, stderr),
        },
    }
}

/// The guest's last error-level log line, or else the end of its stderr.
fn last_words(state: &StoreState, stderr: &Capture) -> Option<String> {
    if let Some(m) = &state.log.last_error {
        return Some(m.clone());
    }
    let (text, _) = stderr.peek();
    let text = text.trim_end();
    if text.is_empty() {
        return None;
    }
    let start = text.len().saturating_sub(1024);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Some(text[start..].to_owned())
}

/// Attributes what the guest printed to it in the host's log.
fn log_stdio(rule: &str, stdout: &Capture, stderr: &Capture) {
    for (stream, capture) in [("stdout", stdout), ("stderr", stderr)] {
        let (text, dropped) = capture.peek();
        if !text.is_empty() {
            tracing::info!(target: "rulebox::rule", rule, stream, dropped, "{}", text.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::staggered_limit;

    #[test]
    fn reuse_limits_are_staggered_within_the_top_eighth() {
        // Small limits are kept exactly (tests and cautious users count on them).
        for n in 0..50 {
            assert_eq!(staggered_limit(3, n), 3);
            assert_eq!(staggered_limit(1, n), 1);
        }
        // A default limit: every instance within [875, 1000], and twenty instances created
        // together (a bundle's rules) spread over many values, not one.
        let limits: std::collections::BTreeSet<u32> =
            (0..20).map(|k| staggered_limit(1000, k)).collect();
        assert!(
            limits.iter().all(|l| (875..=1000).contains(l)),
            "{limits:?}"
        );
        assert!(limits.len() >= 15, "{limits:?}");
        // No overflow at the extremes.
        assert!(staggered_limit(u32::MAX, u32::MAX) >= u32::MAX - u32::MAX / 8);
    }
}
