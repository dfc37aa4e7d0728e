//! A component of another world: it exports `check`, not `evaluate`. Loading it as a rule must
//! fail and say what it exports.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package acme:other;
        world checker { export check: func(input: string) -> bool; }
    ",
});

struct Checker;
impl Guest for Checker {
    fn check(input: String) -> bool {
        input.is_empty()
    }
}
export!(Checker);
