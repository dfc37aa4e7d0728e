//! `bundle.toml`: the serde types and the checks that need no files.

use super::source::SourceLimits;
use crate::cache::CachePolicy;
use crate::config::LimitsOverride;
use crate::rule::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A parsed `bundle.toml`. Unknown keys are rejected everywhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[bundle]` table.
    pub bundle: BundleSection,
    /// One `[[rule]]` table per rule.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSection>,
    /// Golden cases for the whole bundle (`[[test]]`).
    #[serde(default, rename = "test", skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
}

/// `[bundle]`: identity, how decisions combine, defaults for every rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSection {
    /// The manifest format this bundle is written for: `1`. Required, so the format can
    /// evolve: a host refuses a format it does not know instead of misreading it.
    pub format: u32,
    /// The bundle's name: bundles are addressed by it. Lower-case letters, digits, `-`, `_`.
    pub name: String,
    /// The revision, free text (`2026-11-22.1`, a git hash, ...); shown in every result.
    pub revision: String,
    /// What the bundle is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How rule decisions combine into the bundle's verdict. Default `deny-overrides`.
    #[serde(default)]
    pub combine: Combine,
    /// Default limits for the bundle's rules (each rule may override).
    #[serde(default)]
    pub limits: LimitsOverride,
    /// Default failure policy for the bundle's rules. Default `deny` (fail closed).
    #[serde(default)]
    pub on_error: OnError,
    /// Default result-cache policy for the bundle's rules.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Most rules of one evaluation run at once. Default: the number of CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

/// The `bundle.format` this version reads and writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// `[[rule]]`: one rule of the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// The rule's name, unique in the bundle; dependents and results refer to it.
    pub name: String,
    /// Path of the component inside the bundle.
    pub component: String,
    /// SHA-256 of the component, hex. `rulebox bundle pack` fills it in; when present it
    /// must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// JSON paths the rule reads, or `["*"]` for the whole document.
    #[serde(default)]
    pub reads: Vec<String>,
    /// Rules whose decisions this rule receives; they run before it.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Settings handed to the rule as JSON.
    #[serde(default)]
    pub settings: toml::Table,
    /// Limits over the bundle's defaults.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// Read-only directories of the bundle the rule may read.
    #[serde(default)]
    pub grants: Vec<GrantSection>,
    /// Failure policy over the bundle's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    /// Result-cache policy over the bundle's default.
    #[serde(default)]
    pub cache: CachePolicy,
    /// `"fresh"` (the default: a new instance per evaluation) or `"reuse"` (opt-in warm
    /// mode, weaker isolation: see [`Isolation::Reuse`](crate::Isolation::Reuse)).
    #[serde(default, skip_serializing_if = "is_fresh")]
    pub isolation: crate::Isolation,
    /// With `isolation = "reuse"`, evaluations one instance answers before it is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_limit: Option<u32>,
    /// Golden cases for this rule (`[[rule.test]]`).
    #[serde(default, rename = "test", skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
}

fn is_fresh(i: &crate::Isolation) -> bool {
    *i == crate::Isolation::Fresh
}

/// A read-only grant of a bundle directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSection {
    /// The directory inside the bundle.
    pub dir: String,
    /// Where the rule sees it. Default `/data`.
    #[serde(default = "default_guest_dir")]
    pub guest: String,
}

fn default_guest_dir() -> String {
    "/data".to_owned()
}

/// How rule decisions combine into one verdict. Rules that abstain (and rules that failed
/// with `on_error = "skip"`) take no part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    /// Any deny wins; else any review; else allow if any rule allowed; else abstain.
    #[default]
    DenyOverrides,
    /// Any allow wins; else any review; else deny if any rule denied; else abstain.
    AllowOverrides,
    /// The first rule in manifest order that did not abstain decides.
    FirstApplicable,
    /// Allow only if every rule allowed; otherwise deny.
    All,
}

/// What a failed rule (trap, timeout, rule error, ...) counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail closed: the failure counts as a deny, with the error as its reason.
    #[default]
    Deny,
    /// Fail open: the rule is left out, as if it abstained.
    Skip,
}

/// A golden case: an input and what must come out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// A name for the report. Default: its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The input document.
    pub input: toml::Table,
    /// The expected verdict.
    pub verdict: Verdict,
    /// The expected score, if it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The expected reasons, if they matter (exactly these, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
}

/// A manifest problem, named by rule (when it is about one) and field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", rule.as_ref().map(|r| format!("rule `{r}`: ")).unwrap_or_default(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ManifestError {
    /// The rule, if the problem is in a `[[rule]]` table.
    pub rule: Option<String>,
    /// The field (`depends_on`, `limits.timeout_ms`, ...).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    pub(crate) fn new(
        rule: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ManifestError {
            rule: rule.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Manifest {
    /// Parses `bundle.toml` text; a syntax error or unknown key is reported with its place.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let syntax =
            |e: toml::de::Error| ManifestError::new(None, "", e.to_string().trim_end().to_owned());
        // The format first: a later format may have fields this one does not, and its
        // bundles must be refused for their format, not for an "unknown field".
        let table: toml::Table = toml::from_str(text).map_err(syntax)?;
        let format = table.get("bundle").and_then(|b| b.get("format"));
        match format {
            Some(toml::Value::Integer(f)) if *f == i64::from(MANIFEST_FORMAT) => {}
            None => {
                return Err(ManifestError::new(
                    None,
                    "bundle.format",
                    format!(
                        "missing: add `format = {MANIFEST_FORMAT}` to [bundle] (the manifest format the bundle is written for)"
                    ),
                ));
            }
            Some(other) => {
                return Err(ManifestError::new(
                    None,
                    "bundle.format",
                    format!(
                        "{other} is not a manifest format this rulebox reads (it reads format {MANIFEST_FORMAT})"
                    ),
                ));
            }
        }
        toml::from_str(text).map_err(syntax)
    }

    /// Checks what needs no files (names, duplicates, dependencies, cycles) under the default
    /// [`SourceLimits`]. Returns the rules' indices in dependency layers (each layer depends
    /// only on earlier ones).
    pub fn plan(&self) -> Result<Vec<Vec<usize>>, ManifestError> {
        self.plan_within(&SourceLimits::default())
    }

    /// [`Manifest::plan`] under `limits` (rules per bundle, reads per rule, settings size).
    /// Linear in the size of the manifest and iterative: no dependency graph, however deep,
    /// can exhaust a thread's stack.
    pub fn plan_within(&self, limits: &SourceLimits) -> Result<Vec<Vec<usize>>, ManifestError> {
        check_name(&self.bundle.name).map_err(|m| ManifestError::new(None, "bundle.name", m))?;
        if self.bundle.revision.trim().is_empty() {
            return Err(ManifestError::new(
                None,
                "bundle.revision",
                "must not be empty",
            ));
        }
        if self.rules.is_empty() {
            return Err(ManifestError::new(None, "rule", "the bundle has no rules"));
        }
        if self.rules.len() > limits.max_rules {
            return Err(ManifestError::new(
                None,
                "rule",
                format!(
                    "the bundle has {} rules, over the limit of {} (max_rules)",
                    self.rules.len(),
                    limits.max_rules
                ),
            ));
        }
        if self.bundle.concurrency == Some(0) {
            return Err(ManifestError::new(
                None,
                "bundle.concurrency",
                "must be at least 1",
            ));
        }
        let mut index = HashMap::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            check_name(&r.name).map_err(|m| ManifestError::new(Some(&r.name), "name", m))?;
            if index.insert(r.name.as_str(), i).is_some() {
                return Err(ManifestError::new(
                    Some(&r.name),
                    "name",
                    "is defined twice",
                ));
            }
            if r.reads.len() > limits.max_reads {
                return Err(ManifestError::new(
                    Some(&r.name),
                    "reads",
                    format!(
                        "{} paths, over the limit of {} (max_reads)",
                        r.reads.len(),
                        limits.max_reads
                    ),
                ));
            }
            let settings = serde_json::to_string(&r.settings)
                .map_err(|e| ManifestError::new(Some(&r.name), "settings", e.to_string()))?;
            if settings.len() > limits.max_settings_bytes {
                return Err(ManifestError::new(
                    Some(&r.name),
                    "settings",
                    format!(
                        "{} bytes as JSON, over the limit of {} (max_settings_bytes): settings are handed to every evaluation; ship large data as a grant",
                        settings.len(),
                        limits.max_settings_bytes
                    ),
                ));
            }
        }
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let mut d = Vec::with_capacity(r.depends_on.len());
            let mut seen = HashSet::with_capacity(r.depends_on.len());
            for dep in &r.depends_on {
                let Some(&j) = index.get(dep.as_str()) else {
                    return Err(ManifestError::new(
                        Some(&r.name),
                        "depends_on",
                        format!("unknown rule `{dep}`"),
                    ));
                };
                if !seen.insert(j) {
                    return Err(ManifestError::new(
                        Some(&r.name),
                        "depends_on",
                        format!("`{dep}` is listed twice"),
                    ));
                }
                d.push(j);
            }
            deps.push(d);
        }
        match layers(&deps) {
            Ok(layers) => Ok(layers),
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| self.rules[i].name.as_str()).collect();
                Err(ManifestError::new(
                    None,
                    "depends_on",
                    format!("dependency cycle: {}", names.join(" -> ")),
                ))
            }
        }
    }
}

/// Dependency layers by Kahn's algorithm (a rule's layer is one past its deepest
/// dependency's), or a cycle as a closed path (first == last). Linear, no recursion.
fn layers(deps: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = deps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut layer_of = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &k in &dependents[i] {
            layer_of[k] = layer_of[k].max(layer_of[i] + 1);
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.push(k);
            }
        }
    }
    if done < n {
        // Every rule left waits on another rule left: walking first dependencies from the
        // first one must close a cycle.
        let start = (0..n).find(|&i| waiting[i] > 0).expect("a rule left");
        let mut path = vec![start];
        let mut at_pos = HashMap::from([(start, 0usize)]);
        let mut at = start;
        loop {
            let next = *deps[at]
                .iter()
                .find(|&&d| waiting[d] > 0)
                .expect("a waiting rule waits on a waiting rule");
            if let Some(&p) = at_pos.get(&next) {
                let mut cycle = path[p..].to_vec();
                cycle.push(next);
                return Err(cycle);
            }
            at_pos.insert(next, path.len());
            path.push(next);
            at = next;
        }
    }
    let depth = layer_of.iter().copied().max().unwrap_or(0);
    let mut out = vec![Vec::new(); depth + 1];
    for (i, &l) in layer_of.iter().enumerate() {
        out[l].push(i);
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(rules: &str) -> String {
        format!("[bundle]\nformat = 1\nname = \"b\"\nrevision = \"1\"\n{rules}")
    }

    fn rule(name: &str, deps: &[&str]) -> String {
        format!("[[rule]]\nname = \"{name}\"\ncomponent = \"x.wasm\"\ndepends_on = {deps:?}\n")
    }

    #[test]
    fn diamond_plans_three_layers() {
        let text = manifest(
            &[
                rule("a", &[]),
                rule("b", &["a"]),
                rule("c", &["a"]),
                rule("d", &["b", "c"]),
            ]
            .concat(),
        );
        let plan = Manifest::parse(&text).unwrap().plan().unwrap();
        assert_eq!(plan, vec![vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn cycles_are_named() {
        let text = manifest(
            &[
                rule("a", &["c"]),
                rule("b", &["a"]),
                rule("c", &["b"]),
                rule("d", &[]),
            ]
            .concat(),
        );
        let err = Manifest::parse(&text).unwrap().plan().unwrap_err();
        assert_eq!(
            err.to_string(),
            "depends_on: dependency cycle: a -> c -> b -> a"
        );
        let text = manifest(&rule("a", &["a"]));
        let err = Manifest::parse(&text).unwrap().plan().unwrap_err();
        assert_eq!(err.to_string(), "depends_on: dependency cycle: a -> a");
    }

    #[test]
    fn deep_chains_plan_on_a_small_stack_in_linear_time() {
        // 200,000 rules, each depending on the one before, planned on a 128 KiB stack (a
        // recursive planner overflows long before): one rule per layer.
        let n = 200_000;
        let manifest = Manifest {
            bundle: Manifest::parse(&manifest("")).unwrap().bundle,
            rules: (0..n)
                .map(|i| RuleSection {
                    name: format!("r{i}"),
                    component: "x.wasm".into(),
                    sha256: None,
                    reads: vec![],
                    depends_on: if i == 0 {
                        vec![]
                    } else {
                        vec![format!("r{}", i - 1)]
                    },
                    settings: Default::default(),
                    limits: Default::default(),
                    grants: vec![],
                    on_error: None,
                    cache: Default::default(),
                    isolation: Default::default(),
                    reuse_limit: None,
                    tests: vec![],
                })
                .collect(),
            tests: vec![],
        };
        let limits = SourceLimits {
            max_rules: n,
            ..SourceLimits::default()
        };
        let started = std::time::Instant::now();
        let plan = std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || manifest.plan_within(&limits))
            .unwrap()
            .join()
            .expect("planning must not overflow the stack")
            .unwrap();
        assert_eq!(plan.len(), n);
        assert_eq!(plan[n - 1], vec![n - 1]);
        // Not a timing assertion on the code's speed: a guard against quadratic behaviour,
        // which takes minutes at this size.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn rules_reads_and_settings_are_capped_by_name() {
        let limits = SourceLimits {
            max_rules: 2,
            max_reads: 2,
            max_settings_bytes: 32,
            ..SourceLimits::default()
        };
        let three = manifest(&[rule("a", &[]), rule("b", &[]), rule("c", &[])].concat());
        let err = Manifest::parse(&three)
            .unwrap()
            .plan_within(&limits)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule: the bundle has 3 rules, over the limit of 2 (max_rules)"
        );
        let reads =
            manifest("[[rule]]\nname = \"a\"\ncomponent = \"x\"\nreads = [\"p\", \"q\", \"r\"]\n");
        let err = Manifest::parse(&reads)
            .unwrap()
            .plan_within(&limits)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule `a`: reads: 3 paths, over the limit of 2 (max_reads)"
        );
        let settings = manifest(&format!(
            "[[rule]]\nname = \"a\"\ncomponent = \"x\"\nsettings = {{ blob = \"{}\" }}\n",
            "x".repeat(64)
        ));
        let err = Manifest::parse(&settings)
            .unwrap()
            .plan_within(&limits)
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "rule `a`: settings: 75 bytes as JSON, over the limit of 32 (max_settings_bytes)"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let err = Manifest::parse(&manifest(
            "[[rule]]\nname = \"a\"\ncomponent = \"x\"\nreeds = []\n",
        ))
        .unwrap_err();
        assert!(err.message.contains("unknown field `reeds`"), "{err}");
        assert!(err.message.contains("line 8"), "{err}");
    }
}
