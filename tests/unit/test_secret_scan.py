"""The static secret scan (``secret_findings``) and the proof that it can fail: one planted
sample per pattern is found, references are not. (The scan of the repository's own files:
tests/integration/test_secret_scan_repository.py; secrets at run time: tests/system/
test_reliability.py.)"""

from __future__ import annotations

import re
from pathlib import Path


def secret_findings(paths: list[Path], root: Path) -> list[str]:
    """Likely secrets in text files: AWS keys, private keys, credentials in URLs, and secret-named
    settings given a literal. Allowed: ``$VAR`` / ``${VAR...}`` references and values that say
    they are fake (test fixtures)."""
    patterns = {
        "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
        "credentials in a URL": re.compile(
            r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"{}<>$]{4,})@"
        ),
        "secret-named literal": re.compile(
            r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|fernet_?key)"
            r"['\"]?[ \t]*[:=][ \t]*(?:['\"]([^'\"\s]{4,})['\"]|([^'\"\s#,)]{4,})[ \t]*$)",
            re.MULTILINE,
        ),
    }
    findings = []
    for path in paths:
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (an image)
        text = data.decode("utf-8", errors="replace")
        for what, pattern in patterns.items():
            for m in pattern.finditer(text):
                value = next((g for g in m.groups() if g), m.group(0))
                if value.startswith("$") or "fake" in value.lower():
                    continue
                if what == "secret-named literal" and not (
                    m.group(1) or path.suffix in CONFIG_SUFFIXES or path.name in CONFIG_NAMES
                ):
                    continue  # unquoted right-hand sides count in config files only (code: a name)
                line = text.count("\n", 0, m.start()) + 1
                findings.append(f"{path.relative_to(root)}:{line}: {what}: {m.group(0)[:80]}")
    return findings


CONFIG_SUFFIXES = {".yml", ".yaml", ".env", ".ini", ".cfg", ".toml", ".conf", ".properties"}
CONFIG_NAMES = {"Dockerfile", ".env.example", "Makefile"}


def test_the_secret_scan_finds_each_kind_it_looks_for(tmp_path: Path) -> None:
    """The scan below can fail: one planted sample per pattern is found, references are not."""
    planted = {
        "aws.py": "KEY_ID = '" + "AKIA" + "ABCDEFGHIJKLMNOP'\n",
        "key.pem": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIB...\n",
        "url.py": "URI = 'postgresql://admin:" + "hunter22@db:5432/x'\n",
        "settings.py": "smtp_password = '" + "hunter22'\n",
        "compose.yml": "  POSTGRES_PASSWORD: " + "hunter22\n",
        "ok.yml": "  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}\n  URL: postgresql://u:${P}@db/x\n",
        "ok.py": "password = env.get('SENTINEL_SMTP_PASSWORD')\nTOKEN = 'fake-token-for-tests'\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    found = secret_findings(sorted(tmp_path.iterdir()), tmp_path)
    assert {f.split(":")[0] for f in found} == {
        "aws.py",
        "key.pem",
        "url.py",
        "settings.py",
        "compose.yml",
    }, found
