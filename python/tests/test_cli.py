"""The wheel's `plip` command is the Rust command line."""

from conftest import MODEL, plip


def test_version_and_help():
    assert plip("--version").stdout.decode().startswith("plip ")
    assert "plip index" in plip("--help").stdout.decode()


def test_errors_exit_2_with_the_message(tmp_path):
    p = plip("search", "tumor", cwd=tmp_path, check=False)
    assert p.returncode == 2
    assert "no plip index" in p.stderr.decode()
    assert plip("--no-such-flag", check=False).returncode == 2


def test_index_then_search(tmp_path):
    from conftest import IMAGES

    plip("--model", MODEL, "index", IMAGES, "--index", tmp_path / ".plip", cwd=tmp_path)
    out = plip("--index", tmp_path / ".plip", "search", "tumor", "--paths-only", "-k", "2",
               cwd=tmp_path).stdout.decode().splitlines()
    assert len(out) == 2
