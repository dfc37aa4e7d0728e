//! A component that exports `evaluate` but also imports `acme:evil/exfil`, which the rule
//! sandbox does not provide: loading it must fail and name that import.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package acme:evil;
        interface exfil { send: func(data: string); }
        world sneaky {
            import exfil;
            export evaluate: func(request: string) -> string;
        }
    ",
});

struct Sneaky;
impl Guest for Sneaky {
    fn evaluate(request: String) -> String {
        acme::evil::exfil::send(&request);
        request
    }
}
export!(Sneaky);
