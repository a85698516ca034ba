//! Rebuilds the wasi:http test components in `tests/fixtures/wasi-http` from their
//! hand-written core modules (`NAME.wat`) and their worlds (`wit/world.wit`), with the `wat` and
//! `wit-component` crates only (no guest toolchain): `hello.wasm` answers itself, `fetch.wasm`
//! sends an outgoing request, `slow.wasm` writes its body in two parts 2 s apart, and
//! `files.wasm` imports the host's files (which gust refuses).
//!
//!     cargo run -p gust-testkit --example wasi-http-fixture

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = gust_testkit::repo_root().join("tests/fixtures/wasi-http");
    for name in ["hello", "fetch", "slow", "files"] {
        let mut module = wat::parse_file(dir.join(format!("{name}.wat")))?;
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_dir(dir.join("wit"))?;
        let world = resolve.select_world(&[package], Some(name))?;
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )?;
        let component =
            wit_component::ComponentEncoder::default().module(&module)?.validate(true).encode()?;
        let out = dir.join(format!("{name}.wasm"));
        std::fs::write(&out, &component)?;
        println!("wrote {} ({} bytes)", out.display(), component.len());
    }
    Ok(())
}
