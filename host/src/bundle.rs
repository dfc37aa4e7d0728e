//! Bundles: a manifest, rule components and data, verified, compiled and evaluated as a
//! dependency graph whose decisions combine into one verdict.

mod manifest;
mod pack;
mod signing;
mod source;

pub use manifest::{
    BundleSection, Combine, GrantSection, Manifest, ManifestError, OnError, RuleSection, TestCase,
};
pub use pack::{pack, sign, write_archive};
pub use signing::{SecretKey, SignatureEntry, SignatureError, SignatureFile, TrustedKey, verify};
pub use source::{BundleSource, MANIFEST_FILE, SIGNATURE_FILE, SourceError, SourceLimits};

use crate::cache::{CachePolicy, ResultCache, RuleCache};
use crate::config::LimitsOverride;
use crate::engine::Engine;
use crate::error::{ErrorKind, EvalError, LoadError};
use crate::input::Input;
use crate::rule::{Decision, Evaluation, Grant, Rule, Upstream, Verdict};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The step of loading a bundle that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadStep {
    /// Reading the files or archive, parsing and checking the manifest.
    Read,
    /// Checking the signature.
    Verify,
    /// Compiling and checking the components.
    Compile,
    /// Running the golden cases.
    Test,
}

/// Why a bundle could not be loaded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The files or the archive.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The manifest.
    #[error("bundle.toml: {0}")]
    Manifest(#[from] ManifestError),
    /// The signature.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// A component is not a rule.
    #[error("rule `{rule}`: component: {error}")]
    Component {
        /// The rule.
        rule: String,
        /// Why.
        error: LoadError,
    },
    /// Golden cases failed.
    #[error("{failed} of {total} golden cases failed: {}", first.as_deref().unwrap_or(""))]
    Tests {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The first failure, described.
        first: Option<String>,
    },
}

/// `{"step": "read", "message": "..."}`: what the CLI and the server print.
impl Serialize for BundleError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("step", &self.step())?;
        map.serialize_entry("message", &self.to_string())?;
        map.end()
    }
}

impl BundleError {
    /// The loading step this error belongs to.
    pub fn step(&self) -> LoadStep {
        match self {
            BundleError::Source(_) | BundleError::Manifest(_) => LoadStep::Read,
            BundleError::Signature(_) => LoadStep::Verify,
            BundleError::Component { .. } => LoadStep::Compile,
            BundleError::Tests { .. } => LoadStep::Test,
        }
    }
}

/// A compile-progress callback: (components done, distinct components in all, a rule that
/// uses the one just done). Rules sharing a component compile it once.
pub type Progress = Arc<dyn Fn(usize, usize, &str) + Send + Sync>;

/// How bundles are checked when loaded.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Keys whose signatures are accepted. When any is given, every bundle must carry a
    /// valid signature by one of them.
    pub trusted_keys: Vec<TrustedKey>,
    /// Refuse bundles without a valid signature by a trusted key, even when no key is
    /// trusted (then every bundle is refused, saying so). Default false.
    pub require_signature: bool,
    /// Limits on the bundle's files.
    pub source_limits: SourceLimits,
    /// Called after each distinct component compiles: (done, total, a rule using it).
    pub progress: Option<Progress>,
    /// The result cache the bundle's rules use, per their `cache` policies. Default: none.
    pub cache: Option<Arc<ResultCache>>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("trusted_keys", &self.trusted_keys)
            .field("require_signature", &self.require_signature)
            .field("source_limits", &self.source_limits)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

/// One rule of a loaded bundle.
pub struct BundleRule {
    /// The configured rule.
    pub rule: Rule,
    /// Indices of the rules it depends on.
    pub depends_on: Vec<usize>,
    /// What its failure counts as.
    pub on_error: OnError,
    /// Its result-cache policy (bundle default applied).
    pub cache: CachePolicy,
    /// Its golden cases.
    pub tests: Vec<TestCase>,
    /// Its result-cache state, when it is cached.
    cached: Option<Arc<RuleCache>>,
}

impl std::fmt::Debug for BundleRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleRule")
            .field("rule", &self.rule)
            .field("depends_on", &self.depends_on)
            .field("on_error", &self.on_error)
            .field("cache", &self.cache)
            .field("cached", &self.cached.is_some())
            .finish()
    }
}

impl BundleRule {
    /// Evaluates the rule, through the result cache when it is cached.
    pub fn evaluate(&self, input: &Input, upstream: &[Upstream]) -> Evaluation {
        match &self.cached {
            Some(cache) => cache.evaluate(&self.rule, input, upstream),
            None => self.rule.evaluate_with(input, upstream),
        }
    }

    /// Whether its results are cached.
    pub fn is_cached(&self) -> bool {
        self.cached.is_some()
    }
}

/// A verified, compiled bundle, ready to evaluate. Immutable: a new revision is a new
/// `Bundle`. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Bundle {
    manifest: Manifest,
    rules: Vec<Arc<BundleRule>>,
    layers: Vec<Vec<usize>>,
    concurrency: usize,
    digest: String,
    signed_by: Option<TrustedKey>,
    source: BundleSource,
}

impl Bundle {
    /// Reads, verifies and compiles a bundle directory or `.tar.gz` (without running its
    /// golden cases: see [`Bundle::run_tests`]).
    pub fn load(
        engine: &Engine,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Bundle, BundleError> {
        let limits = &options.source_limits;
        let source = BundleSource::open(path, limits)?;
        let manifest = read_manifest(&source, path, limits)?;
        let layers = manifest.plan_within(limits)?;
        check_files(&manifest, &source)?;
        // Trusting keys means requiring a signature by one of them: an unsigned bundle must
        // not pass where a signed one is expected.
        let signed_by = if options.require_signature || !options.trusted_keys.is_empty() {
            Some(signing::verify(&source, &options.trusted_keys)?)
        } else {
            None
        };
        let digest = source.digest_hex();
        let mut rules = compile_rules(engine, &manifest, &source, options)?;
        if let Some(cache) = &options.cache {
            for (rule, section) in rules.iter_mut().zip(&manifest.rules) {
                rule.cached = cache.for_rule(
                    &manifest.bundle.name,
                    &digest,
                    &rule.rule,
                    rule.cache,
                    !section.grants.is_empty(),
                    section.cache.strategy.is_some(),
                );
            }
        }
        let rules = rules.into_iter().map(Arc::new).collect();
        let concurrency = manifest
            .bundle
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Bundle {
            digest,
            manifest,
            rules,
            layers,
            concurrency,
            signed_by,
            source,
        })
    }

    /// The bundle's name.
    pub fn name(&self) -> &str {
        &self.manifest.bundle.name
    }

    /// The bundle's revision.
    pub fn revision(&self) -> &str {
        &self.manifest.bundle.revision
    }

    /// SHA-256 of the bundle's canonical file listing.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The key that signed it, when a signature was checked.
    pub fn signed_by(&self) -> Option<&TrustedKey> {
        self.signed_by.as_ref()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The rules, in manifest order.
    pub fn rules(&self) -> &[Arc<BundleRule>] {
        &self.rules
    }

    /// The dependency layers, as rule indices.
    pub fn layers(&self) -> &[Vec<usize>] {
        &self.layers
    }

    /// The bundle's files, with their digests.
    pub fn source(&self) -> &BundleSource {
        &self.source
    }

    /// Where the bundle was loaded from.
    pub fn origin(&self) -> &Path {
        self.source.origin()
    }

    /// What the bundle holds, for people and tools: `rulebox bundle inspect` prints it.
    pub fn describe(&self) -> BundleDescription {
        let name = |i: usize| self.rules[i].rule.name().to_owned();
        BundleDescription {
            bundle: self.name().to_owned(),
            revision: self.revision().to_owned(),
            digest: self.digest.clone(),
            combine: self.manifest.bundle.combine,
            signed: self.signed_by.is_some(),
            signature_file: self.source.files().contains_key(SIGNATURE_FILE),
            rules: self
                .rules
                .iter()
                .map(|r| RuleDescription {
                    name: r.rule.name().to_owned(),
                    component_sha256: r.rule.pre().digest_hex(),
                    reads: r.rule.reads().to_strings(),
                    depends_on: r.depends_on.iter().map(|&d| name(d)).collect(),
                    limits: *r.rule.limits(),
                    on_error: r.on_error,
                    cache: r.cache,
                    tests: r.tests.len(),
                })
                .collect(),
            layers: self
                .layers
                .iter()
                .map(|l| l.iter().map(|&i| name(i)).collect())
                .collect(),
            tests: self.manifest.tests.len(),
        }
    }

    /// Evaluates the bundle: the rules of each dependency layer run concurrently on tokio's
    /// blocking pool, on at most `concurrency` workers that each take the layer's next rule;
    /// dependents get their upstream decisions.
    ///
    /// Fails, with no verdict, when the host could not run a rule ([`Overloaded`]): host
    /// trouble is never turned into a rule's deny or skip.
    pub async fn evaluate(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        let start = Instant::now();
        let mut evals: Vec<Option<Evaluation>> = vec![None; self.rules.len()];
        for layer in &self.layers {
            // One task per worker, not per rule: a rule costs ~10-100 us, about what
            // handing a task to another thread costs.
            let jobs: Arc<Vec<Job>> = Arc::new(
                layer
                    .iter()
                    .map(|&i| (i, self.rules[i].clone(), self.upstream_of(i, &evals)))
                    .collect(),
            );
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let workers: Vec<_> = (0..self.concurrency.min(jobs.len()))
                .map(|_| {
                    let (jobs, next, input) = (jobs.clone(), next.clone(), input.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut done = Vec::new();
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((i, rule, upstream)) = jobs.get(n) else {
                                return done;
                            };
                            done.push((*i, rule.evaluate(&input, upstream)));
                        }
                    })
                })
                .collect();
            for worker in workers {
                // A worker that panicked (a host bug) loses its rules; they are reported
                // below as failed rather than taking the evaluation down.
                for (i, eval) in worker.await.unwrap_or_default() {
                    evals[i] = Some(eval);
                }
            }
            for &i in layer {
                if evals[i].is_none() {
                    evals[i] = Some(Evaluation {
                        rule: self.rules[i].rule.name().into(),
                        result: Err(EvalError::Trap {
                            message: "the host task evaluating this rule failed".into(),
                            detail: None,
                        }),
                        metering: Default::default(),
                        cached: false,
                        read_clock: false,
                    });
                }
            }
            self.check_overload(layer, &evals)?;
        }
        Ok(self.finish(evals, start))
    }

    /// Stops an evaluation in which the host could not run a rule.
    fn check_overload(
        &self,
        layer: &[usize],
        evals: &[Option<Evaluation>],
    ) -> Result<(), Overloaded> {
        let mut rules = Vec::new();
        let mut message = String::new();
        for &i in layer {
            if let Some(Evaluation {
                result: Err(e @ EvalError::Overloaded(_)),
                rule,
                ..
            }) = &evals[i]
            {
                rules.push(rule.to_string());
                message = e.to_string();
            }
        }
        if rules.is_empty() {
            Ok(())
        } else {
            Err(Overloaded {
                bundle: self.name().to_owned(),
                rules,
                message,
            })
        }
    }

    /// Evaluates the bundle on the calling thread, one rule after another. The same result as
    /// [`Bundle::evaluate`]; for callers without a runtime and for tiny bundles.
    pub fn evaluate_sequential(&self, input: &Input) -> Result<BundleResult, Overloaded> {
        let start = Instant::now();
        let mut evals: Vec<Option<Evaluation>> = vec![None; self.rules.len()];
        for layer in &self.layers {
            for &i in layer {
                let upstream = self.upstream_of(i, &evals);
                evals[i] = Some(self.rules[i].evaluate(input, &upstream));
                // No verdict can come of it: do not make the rest wait for slots too.
                self.check_overload(&[i], &evals)?;
            }
        }
        Ok(self.finish(evals, start))
    }

    /// What rule `i` receives from its dependencies: their decisions, or for a failed one its
    /// `on_error` effect (a deny with the error as reason; nothing for `skip`).
    fn upstream_of(&self, i: usize, evals: &[Option<Evaluation>]) -> Vec<Upstream> {
        self.rules[i]
            .depends_on
            .iter()
            .filter_map(|&d| {
                let eval = evals[d].as_ref()?;
                let decision = effective(&eval.result, self.rules[d].on_error)?;
                Some(Upstream {
                    rule: self.rules[d].rule.name().to_owned(),
                    decision,
                })
            })
            .collect()
    }

    fn finish(&self, evals: Vec<Option<Evaluation>>, start: Instant) -> BundleResult {
        let evals: Vec<Evaluation> = evals
            .into_iter()
            .map(|e| e.expect("every rule ran"))
            .collect();
        let effects: Vec<Option<Decision>> = evals
            .iter()
            .zip(&self.rules)
            .map(|(e, r)| effective(&e.result, r.on_error))
            .collect();
        let (verdict, reasons) = combine(self.manifest.bundle.combine, &self.rules, &effects);
        BundleResult {
            bundle: self.name().to_owned(),
            revision: self.revision().to_owned(),
            signed: self.signed_by.is_some(),
            verdict,
            reasons,
            rules: evals,
            wall_us: start.elapsed().as_micros() as u64,
        }
    }

    /// Runs every golden case (bundle `[[test]]` and rule `[[rule.test]]`).
    pub async fn run_tests(&self) -> TestReport {
        let mut cases = Vec::new();
        for t in &self.manifest.tests {
            cases.push((None, t));
        }
        for r in &self.rules {
            for t in &r.tests {
                cases.push((Some(r.rule.name()), t));
            }
        }
        let mut outcomes = Vec::with_capacity(cases.len());
        for (n, (rule, case)) in cases.into_iter().enumerate() {
            let name = case.name.clone().unwrap_or_else(|| format!("#{}", n + 1));
            let target = rule.map_or_else(|| "bundle".to_owned(), |r| format!("rule {r}"));
            let problem = match serde_json::to_value(&case.input)
                .map_err(|e| e.to_string())
                .and_then(|v| Input::from_value(v).map_err(|e| e.to_string()))
            {
                Err(e) => Some(format!("input: {e}")),
                Ok(input) => match self.evaluate(&input).await {
                    Err(e) => Some(e.to_string()),
                    Ok(result) => {
                        let got = match rule {
                            None => Ok((result.verdict, None, result.reasons.clone())),
                            Some(r) => {
                                let eval = result
                                    .rules
                                    .iter()
                                    .find(|e| &*e.rule == r)
                                    .expect("rule in result");
                                eval.result
                                    .as_ref()
                                    .map(|d| (d.verdict, d.score, d.reasons.clone()))
                                    .map_err(|e| format!("{}: {e}", e.kind()))
                            }
                        };
                        check_case(case, got)
                    }
                },
            };
            outcomes.push(TestOutcome {
                name,
                target,
                passed: problem.is_none(),
                problem,
            });
        }
        TestReport { cases: outcomes }
    }
}

fn check_case(
    case: &TestCase,
    got: Result<(Verdict, Option<f64>, Vec<String>), String>,
) -> Option<String> {
    let (verdict, score, reasons) = match got {
        Ok(g) => g,
        Err(e) => {
            return Some(format!(
                "expected {:?}, the rule errored: {e}",
                case.verdict
            ));
        }
    };
    if verdict != case.verdict {
        return Some(format!(
            "expected verdict {:?}, got {verdict:?}",
            case.verdict
        ));
    }
    if let Some(want) = case.score
        && score.is_none_or(|s| (s - want).abs() > 1e-9)
    {
        return Some(format!("expected score {want}, got {score:?}"));
    }
    if let Some(want) = &case.reasons
        && want != &reasons
    {
        return Some(format!("expected reasons {want:?}, got {reasons:?}"));
    }
    None
}

/// What an evaluation counts as in combination: its decision, or its `on_error` effect.
fn effective(result: &Result<Decision, EvalError>, on_error: OnError) -> Option<Decision> {
    match (result, on_error) {
        (Ok(d), _) => Some(d.clone()),
        (Err(_), OnError::Skip) => None,
        (Err(e), OnError::Deny) => Some(Decision {
            verdict: Verdict::Deny,
            score: None,
            reasons: vec![format!("failed closed ({}): {e}", e.kind())],
            output: None,
        }),
    }
}

/// Combines effective decisions; reasons come from the rules that decided, prefixed by name.
fn combine(
    how: Combine,
    rules: &[Arc<BundleRule>],
    effects: &[Option<Decision>],
) -> (Verdict, Vec<String>) {
    let present = || {
        effects.iter().enumerate().filter_map(|(i, d)| {
            d.as_ref()
                .filter(|d| d.verdict != Verdict::Abstain)
                .map(|d| (i, d))
        })
    };
    let reasons_of = |verdict: Verdict| -> Vec<String> {
        present()
            .filter(|(_, d)| d.verdict == verdict)
            .flat_map(|(i, d)| named_reasons(rules[i].rule.name(), d))
            .collect()
    };
    let any = |v: Verdict| present().any(|(_, d)| d.verdict == v);
    let first_of = |order: &[Verdict]| -> Verdict {
        order
            .iter()
            .copied()
            .find(|&v| any(v))
            .unwrap_or(Verdict::Abstain)
    };
    let verdict = match how {
        Combine::DenyOverrides => first_of(&[Verdict::Deny, Verdict::Review, Verdict::Allow]),
        Combine::AllowOverrides => first_of(&[Verdict::Allow, Verdict::Review, Verdict::Deny]),
        Combine::FirstApplicable => {
            // Manifest order, not evaluation order.
            if let Some((i, d)) = present().next() {
                return (d.verdict, named_reasons(rules[i].rule.name(), d));
            }
            Verdict::Abstain
        }
        Combine::All => {
            let all_allow = effects
                .iter()
                .all(|d| d.as_ref().is_some_and(|d| d.verdict == Verdict::Allow));
            if all_allow && !effects.is_empty() {
                Verdict::Allow
            } else {
                let mut reasons = Vec::new();
                for (i, d) in effects.iter().enumerate() {
                    let name = rules[i].rule.name();
                    match d {
                        Some(d) if d.verdict == Verdict::Allow => {}
                        Some(d) => reasons.extend(named_reasons(name, d)),
                        None => reasons.push(format!("{name}: skipped after an error")),
                    }
                }
                return (Verdict::Deny, reasons);
            }
        }
    };
    (
        verdict,
        if verdict == Verdict::Abstain {
            Vec::new()
        } else {
            reasons_of(verdict)
        },
    )
}

/// A decision's reasons, each prefixed by its rule; the bare verdict when it gave none.
fn named_reasons(name: &str, d: &Decision) -> Vec<String> {
    if d.reasons.is_empty() {
        vec![format!("{name}: {}", d.verdict.as_str())]
    } else {
        d.reasons.iter().map(|r| format!("{name}: {r}")).collect()
    }
}

/// Checks the manifest against the files: components present and matching their digests,
/// grant directories present, paths inside the bundle.
fn check_files(manifest: &Manifest, source: &BundleSource) -> Result<(), ManifestError> {
    for r in &manifest.rules {
        let rule = Some(r.name.as_str());
        let path = source::check_manifest_path(&r.component)
            .map_err(|m| ManifestError::new(rule, "component", m))?;
        let Some(digest) = source.files().get(&path) else {
            return Err(ManifestError::new(
                rule,
                "component",
                format!("file `{path}` is not in the bundle"),
            ));
        };
        if let Some(want) = &r.sha256 {
            let have = hex::encode(digest);
            if !want.eq_ignore_ascii_case(&have) {
                return Err(ManifestError::new(
                    rule,
                    "sha256",
                    format!("`{path}` has digest {have}, the manifest says {want}"),
                ));
            }
        }
        for (i, g) in r.grants.iter().enumerate() {
            let dir = source::check_manifest_path(&g.dir)
                .map_err(|m| ManifestError::new(rule, format!("grants[{i}].dir"), m))?;
            if !source.has_dir(&dir) {
                return Err(ManifestError::new(
                    rule,
                    format!("grants[{i}].dir"),
                    format!("`{dir}` is not a directory in the bundle"),
                ));
            }
        }
    }
    Ok(())
}

/// Reads `bundle.toml`: present, within its size limit, UTF-8.
fn read_manifest(
    source: &BundleSource,
    path: &Path,
    limits: &SourceLimits,
) -> Result<Manifest, BundleError> {
    let Some(size) = source.size(MANIFEST_FILE) else {
        return Err(SourceError(format!(
            "{}: no bundle.toml at the bundle's top level",
            path.display()
        ))
        .into());
    };
    if size > limits.max_manifest_bytes {
        return Err(SourceError(format!(
            "bundle.toml is {size} bytes, over the limit of {} (max_manifest_bytes)",
            limits.max_manifest_bytes
        ))
        .into());
    }
    let text = String::from_utf8(source.read(MANIFEST_FILE)?).map_err(|e| {
        SourceError(format!(
            "bundle.toml is not UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(Manifest::parse(&text)?)
}

/// Compiles the bundle's distinct components in parallel (through the engine's caches), each
/// from the bytes that were digested (and verified) when the bundle was read, and configures
/// each rule.
fn compile_rules(
    engine: &Engine,
    manifest: &Manifest,
    source: &BundleSource,
    options: &LoadOptions,
) -> Result<Vec<BundleRule>, BundleError> {
    let total = manifest.rules.len();
    // Distinct component paths, each with the first rule that names it (for errors).
    let mut component_of = Vec::with_capacity(total);
    let mut distinct: Vec<(String, usize)> = Vec::new();
    let mut by_path: HashMap<String, usize> = HashMap::new();
    for (i, r) in manifest.rules.iter().enumerate() {
        let path = source::check_manifest_path(&r.component).unwrap_or_default();
        let k = *by_path.entry(path.clone()).or_insert_with(|| {
            distinct.push((path, i));
            distinct.len() - 1
        });
        component_of.push(k);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let compiled: Vec<std::sync::OnceLock<Result<crate::RulePre, BundleError>>> =
        (0..distinct.len()).map(|_| Default::default()).collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(distinct.len())
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, first)) = distinct.get(k) else {
                        break;
                    };
                    let rule = &manifest.rules[*first].name;
                    let result = source
                        .read(path)
                        .map_err(BundleError::from)
                        .and_then(|bytes| {
                            engine.load(&bytes).map_err(|error| BundleError::Component {
                                rule: rule.clone(),
                                error,
                            })
                        });
                    let _ = compiled[k].set(result);
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if let Some(progress) = &options.progress {
                        progress(n, distinct.len(), rule);
                    }
                }
            });
        }
    });
    let index: HashMap<&str, usize> = manifest
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let b = &manifest.bundle;
    let mut rules = Vec::with_capacity(total);
    for (r, &k) in manifest.rules.iter().zip(&component_of) {
        let pre = match compiled[k].get().expect("every component compiled") {
            Ok(pre) => pre.clone(),
            Err(e) => return Err(e.clone()),
        };
        let named = |e: crate::ConfigError| {
            BundleError::Manifest(ManifestError::new(Some(&r.name), e.field, e.message))
        };
        let limits = merge_limits(&b.limits, &r.limits);
        let settings = serde_json::to_value(&r.settings)
            .map_err(|e| named(crate::ConfigError::new("settings", e.to_string())))?;
        let mut builder = Rule::builder(r.name.clone(), pre)
            .reads(r.reads.clone())
            .settings(settings)
            .limits(limits);
        for g in &r.grants {
            let dir = source::check_manifest_path(&g.dir).unwrap_or_default();
            builder = builder.grant(Grant {
                host: source.root().join(dir),
                guest: g.guest.clone(),
            });
        }
        rules.push(BundleRule {
            rule: builder.build().map_err(named)?,
            depends_on: r.depends_on.iter().map(|d| index[d.as_str()]).collect(),
            on_error: r.on_error.unwrap_or(b.on_error),
            cache: r.cache.or(b.cache),
            tests: r.tests.clone(),
            cached: None,
        });
    }
    Ok(rules)
}

fn merge_limits(bundle: &LimitsOverride, rule: &LimitsOverride) -> LimitsOverride {
    LimitsOverride {
        fuel: rule.fuel.or(bundle.fuel),
        timeout_ms: rule.timeout_ms.or(bundle.timeout_ms),
        memory_bytes: rule.memory_bytes.or(bundle.memory_bytes),
        output_bytes: rule.output_bytes.or(bundle.output_bytes),
    }
}

/// One rule of a layer, ready to run on a worker: its index, the rule, its upstream.
type Job = (usize, Arc<BundleRule>, Vec<Upstream>);

/// An evaluation the host could not complete: a rule got no evaluation slot in time, or was
/// starved of CPU. There is no verdict: retry later (a server answers 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bundle `{bundle}` was not evaluated: {message} (rules: {})", rules.join(", "))]
pub struct Overloaded {
    /// The bundle.
    pub bundle: String,
    /// The rules the host could not run.
    pub rules: Vec<String>,
    /// Why, as the host saw it.
    pub message: String,
}

/// `{"kind": "overloaded", "message": "...", "rules": [...]}`.
impl Serialize for Overloaded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("kind", &ErrorKind::Overloaded)?;
        map.serialize_entry("message", &self.to_string())?;
        map.serialize_entry("rules", &self.rules)?;
        map.end()
    }
}

/// The result of evaluating a bundle. Its JSON form (`Serialize`) is what
/// `rulebox eval --bundle` and the server print.
#[derive(Clone, Debug, Serialize)]
pub struct BundleResult {
    /// The bundle's name.
    pub bundle: String,
    /// The revision that produced this result.
    pub revision: String,
    /// Whether that revision's signature was verified against a trusted key when it loaded.
    pub signed: bool,
    /// The combined verdict.
    pub verdict: Verdict,
    /// The reasons that decided it, each prefixed by its rule's name.
    pub reasons: Vec<String>,
    /// Wall time of the whole evaluation, in microseconds.
    pub wall_us: u64,
    /// Every rule's evaluation, in manifest order.
    pub rules: Vec<Evaluation>,
}

impl BundleResult {
    /// The JSON form (see the `Serialize` impl) as a value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The evaluation of the rule named `rule`.
    pub fn rule(&self, rule: &str) -> Option<&Evaluation> {
        self.rules.iter().find(|e| &*e.rule == rule)
    }

    /// How many rules errored, by kind.
    pub fn errors(&self) -> Vec<(String, ErrorKind)> {
        self.rules
            .iter()
            .filter_map(|e| {
                e.result
                    .as_ref()
                    .err()
                    .map(|err| (e.rule.to_string(), err.kind()))
            })
            .collect()
    }
}

/// What a loaded bundle holds ([`Bundle::describe`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BundleDescription {
    /// The bundle's name.
    pub bundle: String,
    /// Its revision.
    pub revision: String,
    /// SHA-256 of its canonical file listing.
    pub digest: String,
    /// How its rules' decisions combine.
    pub combine: Combine,
    /// Whether its signature was verified against a trusted key (false when no key was
    /// given: then it was not checked).
    pub signed: bool,
    /// Whether it carries a `bundle.sig`.
    pub signature_file: bool,
    /// Its rules, in manifest order.
    pub rules: Vec<RuleDescription>,
    /// The dependency layers, by rule name: each layer's rules run concurrently.
    pub layers: Vec<Vec<String>>,
    /// Bundle-level golden cases.
    pub tests: usize,
}

/// One rule of a [`BundleDescription`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleDescription {
    /// The rule's name.
    pub name: String,
    /// SHA-256 of its component.
    pub component_sha256: String,
    /// What it reads.
    pub reads: Vec<String>,
    /// The rules it depends on.
    pub depends_on: Vec<String>,
    /// The limits it runs under (bundle defaults applied).
    pub limits: crate::config::Limits,
    /// What its failure counts as.
    pub on_error: OnError,
    /// Its result-cache policy.
    pub cache: CachePolicy,
    /// Its golden cases.
    pub tests: usize,
}

/// The outcome of a bundle's golden cases.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    /// One per case.
    pub cases: Vec<TestOutcome>,
}

impl TestReport {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// As an error, when any case failed.
    pub fn into_result(self) -> Result<TestReport, BundleError> {
        let failed = self.failed();
        if failed == 0 {
            return Ok(self);
        }
        let first = self.cases.iter().find(|c| !c.passed).map(|c| {
            format!(
                "{} `{}`: {}",
                c.target,
                c.name,
                c.problem.as_deref().unwrap_or("")
            )
        });
        Err(BundleError::Tests {
            failed,
            total: self.cases.len(),
            first,
        })
    }
}

/// One golden case's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TestOutcome {
    /// The case's name.
    pub name: String,
    /// `bundle` or `rule NAME`.
    pub target: String,
    /// Whether it passed.
    pub passed: bool,
    /// What differed.
    pub problem: Option<String>,
}
