"""The CPU description every bench prints: model and the flags that decide torch's kernels."""

from mmsurv.machine import cpu_description, cpu_model_and_flags


def test_reads_model_and_only_the_flags_of_interest(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma avx512f\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma avx512f\n")
    assert cpu_model_and_flags(cpuinfo) == ("AMD EPYC 7B13", ["avx2", "avx512f"])


def test_missing_cpuinfo_is_unknown_not_an_error(tmp_path):
    assert cpu_model_and_flags(tmp_path / "absent") == ("unknown CPU", [])


def test_description_names_the_flags():
    assert cpu_description().startswith("CPU: ") and "flags: " in cpu_description()
