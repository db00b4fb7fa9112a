// Belongs in tests/npu_backend.rs (it uses that file's helpers); moved here
// while it fails. See README.md beside this file.

#[test]
fn w16a16_greedy_equals_cpu_on_smollm2() {
    let cpu = load(Device::Cpu, "auto");
    let npu = load(Device::NpuSim, "w16a16");
    assert_matmuls_on_npu(&npu);
    let prompt = prompt_tokens(&cpu);
    let n = 10;
    let want = greedy(&cpu, &prompt, n);
    let got = greedy(&npu, &prompt, n);
    assert_eq!(got, want, "npu-sim w16a16 greedy ids differ from the CPU's");
}
