//! Rebuilds `tests/fixtures/wasi-http/hello.wasm`, the wasi:http test component, from its
//! hand-written core module (`hello.wat`) and its world (`wit/`), with the `wat` and
//! `wit-component` crates only (no guest toolchain):
//!
//!     cargo run -p gust-testkit --example wasi-http-fixture

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = gust_testkit::repo_root().join("tests/fixtures/wasi-http");
    let mut module = wat::parse_file(dir.join("hello.wat"))?;
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve.push_dir(dir.join("wit"))?;
    let world = resolve.select_world(&[package], Some("hello"))?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    let component = wit_component::ComponentEncoder::default().module(&module)?.validate(true).encode()?;
    let out = dir.join("hello.wasm");
    std::fs::write(&out, &component)?;
    println!("wrote {} ({} bytes)", out.display(), component.len());
    Ok(())
}
