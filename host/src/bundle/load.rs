//! Loading a bundle: read (snapshot, manifest, plan), check files, verify the signature,
//! compile the distinct components in parallel, configure each rule.

use super::source::{self, BundleSource, MANIFEST_FILE, SourceError, SourceLimits};
use super::{Bundle, BundleError, BundleRule, LoadOptions, Manifest, ManifestError, signing};
use crate::config::LimitsOverride;
use crate::engine::Engine;
use crate::rule::{Grant, Rule};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

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
        for (rule, section) in rules.iter_mut().zip(&manifest.rules) {
            let cached = match &options.cache {
                None => Err("no result cache is configured where it was loaded".to_owned()),
                Some(cache) => cache.for_rule(
                    &manifest.bundle.name,
                    &digest,
                    &rule.rule,
                    rule.cache,
                    !section.grants.is_empty(),
                    section.cache.strategy.is_some(),
                ),
            };
            match cached {
                Ok(c) => rule.cached = Some(c),
                Err(why) => {
                    if options.cache.is_some() && !section.grants.is_empty() {
                        // Said at load, not left for a user to discover in the stats.
                        tracing::info!(bundle = %manifest.bundle.name, rule = %section.name, "results not cached: {why}");
                    }
                    rule.not_cached = Some(why);
                }
            }
        }
        let rules: Vec<_> = rules.into_iter().map(Arc::new).collect();
        let wasi_layers = layers
            .iter()
            .map(|layer| layer.iter().any(|&i| rules[i].rule.pre().imports_wasi()))
            .collect();
        let concurrency = manifest
            .bundle
            .concurrency
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Bundle {
            digest,
            manifest,
            rules,
            layers,
            wasi_layers,
            concurrency,
            inline_below_us: options.inline_below_us,
            signed_by,
            source,
        })
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
        return Err(SourceError::invalid(format!(
            "{}: no bundle.toml at the bundle's top level",
            path.display()
        ))
        .into());
    };
    if size > limits.max_manifest_bytes {
        return Err(SourceError::limit(
            "max_manifest_bytes",
            format!(
                "bundle.toml is {size} bytes, over the limit of {} (max_manifest_bytes)",
                limits.max_manifest_bytes
            ),
        )
        .into());
    }
    let text = String::from_utf8(source.read(MANIFEST_FILE)?).map_err(|e| {
        SourceError::invalid(format!(
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
            if e.field == "init" {
                // The rule's own `init` failed: a component problem, not the manifest's.
                return BundleError::Component {
                    rule: r.name.clone(),
                    error: crate::LoadError::Init(e.message),
                };
            }
            BundleError::Manifest(ManifestError::new(Some(&r.name), e.field, e.message))
        };
        let limits = merge_limits(&b.limits, &r.limits);
        let settings = serde_json::to_value(&r.settings)
            .map_err(|e| named(crate::ConfigError::new("settings", e.to_string())))?;
        let mut builder = Rule::builder(r.name.clone(), pre)
            .reads(r.reads.clone())
            .settings(settings)
            .limits(limits)
            .isolation(r.isolation);
        if let Some(n) = r.reuse_limit {
            if r.isolation != crate::Isolation::Reuse {
                return Err(named(crate::ConfigError::new(
                    "reuse_limit",
                    "applies only with isolation = \"reuse\"",
                )));
            }
            builder = builder.reuse_limit(n);
        }
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
            not_cached: None,
            cost: Default::default(),
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
