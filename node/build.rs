// Builds the BPF object (ebpf/programs) for bpfel-unknown-none with the nightly toolchain
// and bpf-linker; the loader embeds it from OUT_DIR.
fn main() -> anyhow::Result<()> {
    let pkg = aya_build::Package {
        name: "meshaccel-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf/programs"),
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::default())
}
