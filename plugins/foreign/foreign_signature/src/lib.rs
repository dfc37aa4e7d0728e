//! A component that exports `evaluate` with the wrong signature (string to string). Loading it
//! as a rule must fail and say the export does not match.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package acme:other;
        world lookalike { export evaluate: func(request: string) -> string; }
    ",
});

struct Lookalike;
impl Guest for Lookalike {
    fn evaluate(request: String) -> String {
        request
    }
}
export!(Lookalike);
