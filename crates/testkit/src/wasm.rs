//! Generated WebAssembly modules whose size or compile cost is known, so every crate measures
//! and attacks the same thing, and the byte-level helpers to make a module unique.

/// A WASI command of about 1 MB: 5,200 functions of integer arithmetic (the bench's "first-ever
/// compile of a ~1 MB module").
pub fn large_module() -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..5200 {
        wat.push_str(&format!("(func $f{i} (param i32) (result i32) (local i32)\n"));
        for k in 0..12 {
            wat.push_str(&format!(
                "local.get 0 i32.const {} i32.mul i32.const {} i32.add local.get 1 i32.xor local.set 1\n",
                i * 31 + k,
                k * 7 + 1
            ));
        }
        wat.push_str("local.get 1)\n");
    }
    wat.push_str("(func (export \"_start\") i32.const 1 call $f0 drop))");
    wat::parse_str(&wat).expect("generated WAT is valid")
}

/// A small command that is costly to compile: `_start` keeps `locals` locals live across
/// `blocks` blocks, and the compiler's memory and time grow with their product (2,000 × 2,000
/// is 44 KB of code, ~190 MB resident and ~0.8 s to compile in a debug build).
pub fn costly_to_compile(locals: usize, blocks: usize) -> Vec<u8> {
    let mut wat = String::from("(module (memory 1) (func (export \"_start\")");
    wat.push_str(&" (local i32)".repeat(locals));
    for i in 0..blocks {
        let local = i % locals;
        wat.push_str(&format!(" (block (br_if 0 (local.get {local})) (local.set {local} (i32.const {i})))"));
    }
    for local in 0..locals {
        wat.push_str(&format!(" (i32.store (i32.const 0) (local.get {local}))"));
    }
    wat.push_str("))");
    wat::parse_str(&wat).expect("generated WAT is valid")
}

/// Appends `n` as unsigned LEB128, WebAssembly's encoding of sizes and counts.
pub fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `module` with a custom section `name` holding `payload` appended: code that behaves the
/// same but is new bytes (its own sha256), so a store or a cache treats it as new code.
pub fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut section = Vec::with_capacity(5 + name.len() + payload.len());
    leb128(name.len(), &mut section);
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0); // custom section
    leb128(section.len(), &mut out);
    out.extend_from_slice(&section);
    out
}
