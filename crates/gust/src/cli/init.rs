//! `gust init NAME --template T`: a new directory NAME/ holding a function that builds and
//! deploys as it is, with a README whose first `sh` block is the commands that do it (the
//! tests run exactly that block).
//!
//! Must not: overwrite anything. The directory is created with `mkdir` (an existing one is
//! refused) and every file in it with `O_EXCL`.

use std::path::Path;

use clap::ValueEnum;

use super::api::Failure;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// A Rust WASI command for the wasm runtime (cargo build --target wasm32-wasip1).
    RustWasm,
    /// A Python handler (app.handler) for python3.x on AWS's awslambdaric.
    Python,
    /// A Node.js handler (index.handler) for nodejsN.x on AWS's aws-lambda-ric.
    Node,
    /// A custom runtime: an executable `bootstrap` speaking the Lambda Runtime API (sh + curl).
    Provided,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The function's name, also the name of the directory made for it.
    pub name: String,
    #[arg(long, value_enum)]
    pub template: Template,
}

/// One file of a template: its path in the directory, its text (`{{name}}` is the function's
/// name, `{{crate}}` its Cargo package name), and whether it is executable.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> File {
    File { path, text, executable: false }
}

const PYTHON: &[File] = &[
    file(
        "app.py",
        r#"# {{name}}: a Lambda Python handler, run unmodified by gust's python3.x runtime.
# The event is the JSON the caller sent; what the handler returns is the result (as JSON).
# print() goes to the invocation's log (gust logs {{name}}); an exception is a function error.


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name} in {context.aws_request_id}")
    return {"message": f"Hello, {name}!", "function": context.function_name}
"#,
    ),
    file(
        "README.md",
        r#"# {{name}}

A Python handler (`app.handler`) for gust's `python3.x` runtime (the server needs `python3` with
`awslambdaric`). Build the package, deploy it and invoke it:

```sh
cd {{name}}
python3 -m zipfile -c function.zip app.py
gust deploy {{name}} --code function.zip --runtime python3.12 --handler app.handler
gust invoke {{name}} --payload '{"name": "Ada"}'
```

Deploying again changes only what its flags name (`--memory 256`, `--timeout 30s`,
`--env KEY=VALUE`); `gust function get {{name}}` shows the result, `gust logs {{name}}` the logs.
"#,
    ),
    file(".gitignore", "function.zip\n__pycache__/\n"),
];

const NODE: &[File] = &[
    file(
        "index.mjs",
        r#"// {{name}}: a Lambda Node.js handler, run unmodified by gust's nodejsN.x runtime.
// The event is the JSON the caller sent; what the handler returns is the result (as JSON).
// console.log goes to the invocation's log (gust logs {{name}}); a throw is a function error.
export const handler = async (event, context) => {
  const name = (event && event.name) || "world";
  console.log(`greeting ${name} in ${context.awsRequestId}`);
  return { message: `Hello, ${name}!`, function: context.functionName };
};
"#,
    ),
    file(
        "README.md",
        r#"# {{name}}

A Node.js handler (`index.handler`) for gust's `nodejsN.x` runtime (the server needs `node` and
AWS's `aws-lambda-ric`). Build the package, deploy it and invoke it:

```sh
cd {{name}}
python3 -m zipfile -c function.zip index.mjs
gust deploy {{name}} --code function.zip --runtime nodejs22.x --handler index.handler
gust invoke {{name}} --payload '{"name": "Ada"}'
```

Deploying again changes only what its flags name (`--memory 256`, `--timeout 30s`,
`--env KEY=VALUE`); `gust function get {{name}}` shows the result, `gust logs {{name}}` the logs.
"#,
    ),
    file(".gitignore", "function.zip\nnode_modules/\n"),
];

const PROVIDED: &[File] = &[
    File {
        path: "bootstrap",
        executable: true,
        text: r#"#!/bin/sh
# {{name}}: a Lambda custom runtime (provided.al2023). It asks the Runtime API for the next
# event, hands it to `handle`, posts what `handle` prints as the result (or an error if it
# fails), and loops. What it writes on stderr is the invocation's log.
set -eu
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
headers="$(mktemp)"

# The function: the event (JSON) is $1; print the result (JSON) on stdout.
handle() {
    printf '{"message":"Hello from %s!","received":%s}' "$AWS_LAMBDA_FUNCTION_NAME" "$1"
}

while true; do
    event="$(curl -sS -D "$headers" "$api/next")"
    id="$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | tr -d '\r' | cut -d' ' -f2)"
    echo "{{name}}: handling $id" >&2
    if result="$(handle "$event")"; then
        curl -sS -o /dev/null -X POST "$api/$id/response" --data-binary "$result"
    else
        curl -sS -o /dev/null -X POST "$api/$id/error" -H 'Content-Type: application/json' \
            --data-binary '{"errorType":"HandlerFailed","errorMessage":"handle exited non-zero"}'
    fi
done
"#,
    },
    file(
        "README.md",
        r#"# {{name}}

A Lambda custom runtime for gust's `provided` runtime: `bootstrap` is an executable (here a
shell script using `curl`) that speaks the Lambda Runtime API. Build the package (the zip
keeps `bootstrap` executable), deploy it and invoke it:

```sh
cd {{name}}
python3 -m zipfile -c function.zip bootstrap
gust deploy {{name}} --code function.zip --runtime provided.al2023
gust invoke {{name}} --payload '{"name": "Ada"}'
```

Any language works the same way: replace `bootstrap` with a program that loops over
`GET /2018-06-01/runtime/invocation/next` and posts each result to `.../{id}/response`.
"#,
    ),
    file(".gitignore", "function.zip\n"),
];

const RUST_WASM: &[File] = &[
    file(
        "Cargo.toml",
        r#"[package]
name = "{{crate}}"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
serde_json = "1"

[profile.release]
opt-level = "s"
strip = true
lto = true
"#,
    ),
    file(
        "src/main.rs",
        r#"//! {{name}}: a gust wasm function, a WASI command module (wasm32-wasip1).
//!
//! The event arrives on stdin, the result is what the program writes on stdout, stderr is the
//! invocation's log, and a non-zero exit is a function error.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("{{name}}: cannot read the event: {e}");
        return ExitCode::FAILURE;
    }
    let event: serde_json::Value = match serde_json::from_str(if input.is_empty() { "{}" } else { &input }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{{name}}: the event is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = event["name"].as_str().unwrap_or("world");
    eprintln!("{{name}}: greeting {name}");
    let result = serde_json::json!({ "message": format!("Hello, {name}!"), "function": "{{name}}" });
    match std::io::stdout().write_all(result.to_string().as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
"#,
    ),
    file(
        "README.md",
        r#"# {{name}}

A Rust function for gust's `wasm` runtime: a WASI command module (`wasm32-wasip1`) that reads
the event on stdin and writes the result on stdout (stderr is the log; a non-zero exit is a
function error). Add the target once (`rustup target add wasm32-wasip1`), then build, deploy
and invoke it:

```sh
cd {{name}}
cargo build --release --target wasm32-wasip1
gust deploy {{name}} --code target/wasm32-wasip1/release/{{crate}}.wasm
gust invoke {{name}} --payload '{"name": "Ada"}'
```

Deploying again changes only what its flags name (`--memory 64`, `--timeout 500ms`,
`--env KEY=VALUE`); `gust function get {{name}}` shows the result, `gust logs {{name}}` the logs.
"#,
    ),
    file(".gitignore", "target/\n"),
];

impl Template {
    fn files(self) -> &'static [File] {
        match self {
            Template::RustWasm => RUST_WASM,
            Template::Python => PYTHON,
            Template::Node => NODE,
            Template::Provided => PROVIDED,
        }
    }
}

/// A Cargo package name for a function name: function names may start with a digit, package
/// names may not.
fn crate_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("fn-{name}")
    } else {
        name.to_string()
    }
}

/// Makes `parent/NAME/` with the template's files; the paths written.
pub fn scaffold(parent: &Path, args: &InitArgs) -> Result<Vec<String>, Failure> {
    gust_core::names::validate_function_name(&args.name).map_err(|e| Failure::usage(e.to_string()))?;
    let dir = parent.join(&args.name);
    std::fs::create_dir(&dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::usage(format!(
            "{} exists already: gust init never overwrites; choose another name",
            dir.display()
        )),
        _ => Failure::usage(format!("cannot create {}: {e}", dir.display())),
    })?;
    let crate_name = crate_name(&args.name);
    let mut written = Vec::new();
    for f in args.template.files() {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Failure::usage(format!("cannot create {}: {e}", parent.display())))?;
        }
        let text = f.text.replace("{{name}}", &args.name).replace("{{crate}}", &crate_name);
        write_new(&path, text.as_bytes(), if f.executable { 0o755 } else { 0o644 })?;
        written.push(format!("{}/{}", args.name, f.path));
    }
    Ok(written)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes).map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    // The umask may have taken the executable bit a bootstrap needs.
    if mode & 0o111 != 0 {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Failure::usage(format!("cannot make {} executable: {e}", path.display())))?;
    }
    Ok(())
}

/// The commands of the README's first `sh` block: how to build, deploy and invoke it.
pub fn next_steps(name: &str, template: Template) -> String {
    let readme = template.files().iter().find(|f| f.path == "README.md").map_or("", |f| f.text);
    let block = readme.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).unwrap_or("");
    block.replace("{{name}}", name).replace("{{crate}}", &crate_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_never_overwrites_and_refuses_names_that_are_paths() {
        let dir = tempfile::tempdir().unwrap();
        let args = |name: &str| InitArgs { name: name.into(), template: Template::Python };
        scaffold(dir.path(), &args("f")).unwrap();
        std::fs::write(dir.path().join("f/app.py"), "mine").unwrap();
        let e = scaffold(dir.path(), &args("f")).unwrap_err();
        assert!(e.message.contains("exists already"), "{}", e.message);
        assert_eq!(std::fs::read_to_string(dir.path().join("f/app.py")).unwrap(), "mine");
        for bad in ["../up", "a/b", "", ".", "x y"] {
            assert!(scaffold(dir.path(), &args(bad)).is_err(), "{bad:?}");
        }
        assert!(!dir.path().parent().unwrap().join("up").exists());
    }

    #[test]
    fn every_template_says_how_to_deploy_it() {
        for t in Template::value_variants() {
            let steps = next_steps("7up", *t);
            assert!(steps.contains("gust deploy 7up --code"), "{t:?}: {steps}");
            assert!(steps.contains("gust invoke 7up"), "{t:?}: {steps}");
            assert!(!steps.contains("{{"), "{t:?}: {steps}");
        }
        assert!(next_steps("7up", Template::RustWasm).contains("release/fn-7up.wasm"));
    }
}
