//! Hostile rule: tries to see outside its sandbox and reports what it saw as its output:
//! reads each path in setting `read` (default `/etc/passwd`), lists each directory in
//! `list` (default `/` and `.`), writes each file in `write` (default none), and collects env
//! vars and args.
use rulebox_sdk::prelude::*;
use std::collections::BTreeMap;
pub struct Escape;
impl Rule for Escape {
    fn evaluate(req: &Request) -> Result<Decision, RuleError> {
        let read: Vec<String> = req.setting_or("read", vec!["/etc/passwd".to_owned()])?;
        let list: Vec<String> = req.setting_or("list", vec!["/".to_owned(), ".".to_owned()])?;
        let mut reads = BTreeMap::new();
        for p in read {
            let r = match std::fs::read_to_string(&p) {
                Ok(text) => serde_json::json!({ "ok": text }),
                Err(e) => serde_json::json!({ "err": e.to_string() }),
            };
            reads.insert(p, r);
        }
        let mut lists = BTreeMap::new();
        for d in list {
            let r = match std::fs::read_dir(&d) {
                Ok(entries) => serde_json::json!({ "ok": entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>() }),
                Err(e) => serde_json::json!({ "err": e.to_string() }),
            };
            lists.insert(d, r);
        }
        let mut writes = BTreeMap::new();
        for p in req.setting_or::<Vec<String>>("write", vec![])? {
            let r = match std::fs::write(&p, b"pwned") {
                Ok(()) => serde_json::json!({ "ok": true }),
                Err(e) => serde_json::json!({ "err": e.to_string() }),
            };
            writes.insert(p, r);
        }
        let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        println!("escape attempt on stdout");
        Ok(Decision::allow().output(&serde_json::json!({
            "read": reads, "list": lists, "write": writes, "env": env, "args": args,
        })))
    }
}
export_rule!(Escape);
