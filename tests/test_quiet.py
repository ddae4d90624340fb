"""cbr_lite.quiet: the silencers hide C-level and Python output only inside their block."""


def test_silencers_drop_python_and_c_level_writes_only_inside(run_python):
    result = run_python("""
        import os, sys
        from cbr_lite.quiet import quietly, stderr_silenced
        with stderr_silenced():
            os.write(2, b"hidden")
        os.write(2, b"shown")
        with quietly():
            print("python out"); print("python err", file=sys.stderr)
            os.write(1, b"c out"); os.write(2, b"c err")
        print("after", flush=True)
        assert "tensorflow" not in sys.modules
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "shown"
    assert result.stdout == "after\n"


def test_tensorflow_imported_quietly_prints_nothing(run_python):
    result = run_python("""
        from cbr_lite.quiet import import_tensorflow_quietly
        import_tensorflow_quietly()
        import tensorflow
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
