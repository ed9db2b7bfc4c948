"""The mmsurv command line: every subcommand has --help; demo-cohort and manifest clean run."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from mmsurv.cli import main

COMMANDS = [[], ["demo-cohort"], ["manifest"], ["manifest", "clean"], ["fetch"], ["fetch", "local"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mmsurv")
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: mmsurv" in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "mmsurv", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("mmsurv ")


def test_demo_cohort_then_manifest_clean_then_fetch_local(tmp_path, capsys):
    outdir = tmp_path / "demo"
    assert main(["demo-cohort", str(outdir), "--patients", "5", "--seed", "7", "--width", "768", "--height", "640",
                 "--genes", "12"]) == 0
    assert main(["manifest", "clean", "--manifest", str(outdir / "gdc_manifest.txt"),
                 "--table", str(outdir / "tcga_demo_all_clean.csv.gz"), "--out-dir", str(tmp_path / "clean")]) == 0
    samples = pd.read_csv(tmp_path / "clean/samples.tsv", sep="\t")
    assert samples["case_id"].nunique() == 5
    assert main(["fetch", "local", "--samples", str(tmp_path / "clean/samples.tsv"), "--source-dir",
                 str(outdir / "slides"), "--out-dir", str(tmp_path / "slides")]) == 0
    assert sorted(p.name for p in (tmp_path / "slides").iterdir()) == sorted(f"{s}.svs" for s in samples["slide"])


def test_bad_manifest_exits_nonzero_with_the_message(tmp_path, capsys):
    (tmp_path / "m.txt").write_text("id\tfilename\n")
    (tmp_path / "t.csv").write_text("case_id,slide_id,survival_months,censorship\n")
    code = main(["manifest", "clean", "--manifest", str(tmp_path / "m.txt"), "--table", str(tmp_path / "t.csv"),
                 "--out-dir", str(tmp_path / "o")])
    assert code == 1
    assert "missing column(s) md5, size, state" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["gdc", "download", "--help"], ["gdc", "manifest", "--help"],
                                  ["manifest", "clean", "--help"], ["wsi", "patch", "--help"], ["train", "--help"]])
def test_light_commands_never_import_torch(argv):
    """Each command imports only its own code: downloading or cleaning a manifest loads no torch."""
    import subprocess
    import sys

    code = ("import sys\nfrom mmsurv.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [name for name in ('torch', 'sksurv', 'matplotlib') if name in sys.modules]\n"
            "print('HEAVY', ','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY", f"{' '.join(argv)} imported: {result.stdout[-200:]}"
