//! Test plugin `other-world`: a valid wasm32-wasip2 component that exports
//! world `test:other/other` instead of `sluice:plugin`, so that the host's
//! tests can check it is refused with a reason that names the missing
//! export. Never registered as a built-in; it does not use the SDK.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export run: func() -> string;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> String {
        "not a sluice plugin".to_owned()
    }
}

export!(Other);
