//! Cache keys: SHA-256 over everything that can change a result, with every variable-length
//! part length-prefixed so two different identities never feed the hasher the same bytes.
//!
//! A key has two parts: the rule's *prefix* (bundle and rule name, component digest,
//! settings, reads, strategy, and the bundle's content digest for rules with grants),
//! computed once per loaded rule, and the per-input part (all of the input for `basic`,
//! only what the rule reads otherwise, plus its upstream decisions).

use super::policy::CacheStrategy;
use crate::input::{Input, Reads};
use crate::rule::Upstream;
use sha2::{Digest, Sha256};

/// Bumped whenever the key or entry layout changes, so old entries are never read.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What identifies one cached rule; see the module docs.
pub(crate) struct RuleIdentity<'a> {
    pub bundle: &'a str,
    pub rule: &'a str,
    pub component: &'a [u8; 32],
    pub settings_json: &'a str,
    pub reads: Vec<String>,
    pub strategy: CacheStrategy,
    /// The bundle's content digest, for rules whose grants can read data files.
    pub bundle_digest: Option<&'a str>,
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The rule's prefix.
pub(crate) fn rule_prefix(id: &RuleIdentity<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(FORMAT_VERSION.to_le_bytes());
    // Entries belong to one rule of one bundle (as in L2), so stats and invalidation stay
    // per rule even when two bundles run the same component with the same settings.
    put(&mut h, id.bundle.as_bytes());
    put(&mut h, id.rule.as_bytes());
    h.update(id.component);
    put(&mut h, id.settings_json.as_bytes());
    h.update((id.reads.len() as u64).to_le_bytes());
    for read in &id.reads {
        put(&mut h, read.as_bytes());
    }
    h.update([id.strategy as u8]);
    match id.bundle_digest {
        Some(d) => {
            h.update([1]);
            put(&mut h, d.as_bytes());
        }
        None => h.update([0]),
    }
    h.finalize().into()
}

/// Feeds serialized JSON straight into the hasher.
struct HashWriter<'a>(&'a mut Sha256);
impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The content key of one evaluation: the prefix, the input (as the strategy sees it) and
/// the upstream decisions. The same in every host, so it also names the shared L2 entry.
pub(crate) fn content_key(
    prefix: &[u8; 32],
    strategy: CacheStrategy,
    reads: &Reads,
    input: &Input,
    upstream: &[Upstream],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prefix);
    match (strategy, reads) {
        (CacheStrategy::Basic, _) | (_, Reads::All) => {
            h.update(b"D");
            put(&mut h, input.text().as_bytes());
        }
        (_, Reads::Paths(paths)) => {
            h.update(b"P");
            for p in paths {
                match input.get(p) {
                    None => h.update(b"-"),
                    Some(v) => {
                        h.update(b"+");
                        // JSON values are self-delimiting: no length prefix needed.
                        let _ = serde_json::to_writer(HashWriter(&mut h), v);
                    }
                }
            }
        }
    }
    h.update((upstream.len() as u64).to_le_bytes());
    for u in upstream {
        put(&mut h, u.rule.as_bytes());
        let _ = serde_json::to_writer(HashWriter(&mut h), &u.decision);
    }
    h.finalize().into()
}

/// The Redis key of an entry: readable by bundle and rule (for invalidation by pattern),
/// unique by content.
pub(crate) fn l2_key(bundle: &str, rule: &str, content: &[u8; 32]) -> String {
    format!(
        "rulebox:v{FORMAT_VERSION}:{}/{}:{}",
        bundle,
        rule,
        hex::encode(content)
    )
}

/// The Redis pattern matching every entry (no bundle), a bundle's, or one rule's.
pub(crate) fn l2_pattern(bundle: Option<&str>, rule: Option<&str>) -> String {
    match (bundle, rule) {
        (None, _) => format!("rulebox:v{FORMAT_VERSION}:*"),
        (Some(b), None) => format!("rulebox:v{FORMAT_VERSION}:{}/*", glob_escape(b)),
        (Some(b), Some(r)) => format!(
            "rulebox:v{FORMAT_VERSION}:{}/{}:*",
            glob_escape(b),
            glob_escape(r)
        ),
    }
}

/// Escapes Redis glob metacharacters, so a name matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "*?[]\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Decision, Verdict};

    fn id<'a>(bundle: &'a str, rule: &'a str) -> RuleIdentity<'a> {
        RuleIdentity {
            bundle,
            rule,
            component: &[7; 32],
            settings_json: "{}",
            reads: vec!["order.amount".into()],
            strategy: CacheStrategy::Intelligent,
            bundle_digest: None,
        }
    }

    #[test]
    fn every_part_of_the_identity_changes_the_prefix() {
        let base = rule_prefix(&id("b", "r"));
        assert_eq!(base, rule_prefix(&id("b", "r")), "deterministic");
        let variants: [fn(&mut RuleIdentity); 8] = [
            |i| i.bundle = "b2",
            |i| i.rule = "r2",
            |i| i.component = &[8; 32],
            |i| i.settings_json = r#"{"max":1}"#,
            |i| i.reads = vec!["order.currency".into()],
            |i| i.reads.push("order.currency".into()),
            |i| i.strategy = CacheStrategy::Basic,
            |i| i.bundle_digest = Some("abc"),
        ];
        for (n, change) in variants.iter().enumerate() {
            let mut other = id("b", "r");
            change(&mut other);
            assert_ne!(rule_prefix(&other), base, "variant {n}");
        }
    }

    #[test]
    fn names_are_length_prefixed() {
        // Concatenated without lengths, ("ab", "c") and ("a", "bc") would collide.
        assert_ne!(rule_prefix(&id("ab", "c")), rule_prefix(&id("a", "bc")));
        let mut one = id("b", "r");
        one.reads = vec!["a.b".into()];
        let mut two = id("b", "r");
        two.reads = vec!["a".into(), ".b".into()];
        assert_ne!(rule_prefix(&one), rule_prefix(&two));
    }

    #[test]
    fn intelligent_keys_see_only_what_the_rule_reads() {
        let prefix = [1; 32];
        let reads = Reads::parse(&["order.amount"]).unwrap();
        let a = Input::from_json(r#"{"order":{"amount":5,"note":"x"}}"#).unwrap();
        let b = Input::from_json(r#"{"order":{"amount":5,"note":"y"}}"#).unwrap();
        let c = Input::from_json(r#"{"order":{"amount":6,"note":"x"}}"#).unwrap();
        let missing = Input::from_json(r#"{"order":{}}"#).unwrap();
        let null = Input::from_json(r#"{"order":{"amount":null}}"#).unwrap();
        let key = |s, i: &Input| content_key(&prefix, s, &reads, i, &[]);
        let intelligent = CacheStrategy::Intelligent;
        assert_eq!(key(intelligent, &a), key(intelligent, &b));
        assert_ne!(key(intelligent, &a), key(intelligent, &c));
        assert_ne!(key(intelligent, &missing), key(intelligent, &null));
        // `basic` keys on the whole document.
        assert_ne!(key(CacheStrategy::Basic, &a), key(CacheStrategy::Basic, &b));
    }

    #[test]
    fn upstream_decisions_are_part_of_the_key() {
        let reads = Reads::All;
        let input = Input::from_json("{}").unwrap();
        let up = |v| Upstream {
            rule: "dep".into(),
            decision: Decision::new(v),
        };
        let key =
            |u: &[Upstream]| content_key(&[0; 32], CacheStrategy::Intelligent, &reads, &input, u);
        assert_ne!(key(&[]), key(&[up(Verdict::Allow)]));
        assert_ne!(key(&[up(Verdict::Allow)]), key(&[up(Verdict::Deny)]));
    }

    #[test]
    fn l2_patterns_escape_glob_characters() {
        assert_eq!(l2_pattern(None, None), "rulebox:v1:*");
        assert_eq!(l2_pattern(Some("pay*"), None), "rulebox:v1:pay\\*/*");
        assert_eq!(
            l2_pattern(Some("b"), Some("r[1]?")),
            "rulebox:v1:b/r\\[1\\]\\?:*"
        );
        let key = l2_key("b", "r", &[0xab; 32]);
        assert!(key.starts_with("rulebox:v1:b/r:abab"), "{key}");
    }
}
