//! `bundle.toml`: the serde types and the checks that need no files.

use crate::config::LimitsOverride;
use crate::rule::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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
    /// Golden cases for this rule (`[[rule.test]]`).
    #[serde(default, rename = "test", skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
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

/// Result-cache strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStrategy {
    /// Never cache.
    None,
    /// Key over the whole input, settings and rule digest; fixed TTL.
    Basic,
    /// Key over only what the rule reads, its upstream decisions, settings and digest.
    Intelligent,
    /// Like `intelligent`, but caches a rule only when observed cost and hit rate say it pays,
    /// and tunes the TTL.
    Adaptive,
}

/// A rule's (or the bundle's default) result-cache policy. Every field may be left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// The strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CacheStrategy>,
    /// Time to live of an entry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Results larger than this are not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entry_bytes: Option<usize>,
}

impl CachePolicy {
    /// `self` with `default`'s fields where `self` has none.
    pub fn or(self, default: CachePolicy) -> CachePolicy {
        CachePolicy {
            strategy: self.strategy.or(default.strategy),
            ttl_ms: self.ttl_ms.or(default.ttl_ms),
            max_entry_bytes: self.max_entry_bytes.or(default.max_entry_bytes),
        }
    }
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
        toml::from_str(text)
            .map_err(|e| ManifestError::new(None, "", e.to_string().trim_end().to_owned()))
    }

    /// Checks what needs no files: names, duplicates, dependencies and cycles. Returns the
    /// rules' indices in dependency layers (each layer depends only on earlier ones).
    pub fn plan(&self) -> Result<Vec<Vec<usize>>, ManifestError> {
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
        if self.bundle.concurrency == Some(0) {
            return Err(ManifestError::new(
                None,
                "bundle.concurrency",
                "must be at least 1",
            ));
        }
        let mut index = HashMap::new();
        for (i, r) in self.rules.iter().enumerate() {
            check_name(&r.name).map_err(|m| ManifestError::new(Some(&r.name), "name", m))?;
            if index.insert(r.name.as_str(), i).is_some() {
                return Err(ManifestError::new(
                    Some(&r.name),
                    "name",
                    "is defined twice",
                ));
            }
        }
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let mut d = Vec::new();
            for dep in &r.depends_on {
                let Some(&j) = index.get(dep.as_str()) else {
                    return Err(ManifestError::new(
                        Some(&r.name),
                        "depends_on",
                        format!("unknown rule `{dep}`"),
                    ));
                };
                if d.contains(&j) {
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
        if let Some(cycle) = find_cycle(&deps) {
            let names: Vec<&str> = cycle.iter().map(|&i| self.rules[i].name.as_str()).collect();
            return Err(ManifestError::new(
                None,
                "depends_on",
                format!("dependency cycle: {}", names.join(" -> ")),
            ));
        }
        // Layer = 1 + the deepest dependency's layer.
        let mut layer_of = vec![usize::MAX; deps.len()];
        fn depth(i: usize, deps: &[Vec<usize>], memo: &mut [usize]) -> usize {
            if memo[i] == usize::MAX {
                memo[i] = deps[i]
                    .iter()
                    .map(|&d| depth(d, deps, memo) + 1)
                    .max()
                    .unwrap_or(0);
            }
            memo[i]
        }
        let mut layers: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..deps.len() {
            layers
                .entry(depth(i, &deps, &mut layer_of))
                .or_default()
                .push(i);
        }
        Ok(layers.into_values().collect())
    }
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

/// A cycle in the dependency graph, as a closed path (first == last), if there is one.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        i: usize,
        deps: &[Vec<usize>],
        mark: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        mark[i] = Mark::Open;
        path.push(i);
        for &d in &deps[i] {
            match mark[d] {
                Mark::Open => {
                    let start = path.iter().position(|&p| p == d).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(d);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(d, deps, mark, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark[i] = Mark::Done;
        None
    }
    let mut mark = vec![Mark::New; deps.len()];
    for i in 0..deps.len() {
        if mark[i] == Mark::New
            && let Some(c) = visit(i, deps, &mut mark, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(rules: &str) -> String {
        format!("[bundle]\nname = \"b\"\nrevision = \"1\"\n{rules}")
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
    fn unknown_keys_are_refused_with_their_place() {
        let err = Manifest::parse(&manifest(
            "[[rule]]\nname = \"a\"\ncomponent = \"x\"\nreeds = []\n",
        ))
        .unwrap_err();
        assert!(err.message.contains("unknown field `reeds`"), "{err}");
        assert!(err.message.contains("line 7"), "{err}");
    }
}
