//! Compiles the default model into the binary when `models/default/` holds one.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_default_model)");
    println!("cargo::rerun-if-changed=models/default/card.json");
    println!("cargo::rerun-if-changed=models/default/weights.bpk");

    let dir = std::path::Path::new("models/default");
    if dir.join("card.json").is_file() && dir.join("weights.bpk").is_file() {
        println!("cargo::rustc-cfg=has_default_model");
    }
}
