"""Small corpora shared by the dagster.materialize tests."""


def write_corpus(root, n_docs: int, min_sentences: int):
    """`n_docs` small text files whose words make each one findable (topicN, item N*j)."""
    root.mkdir()
    for i in range(n_docs):
        words = " ".join(
            f"topic{i} sentence {j} about item {i * j}." for j in range(min_sentences + i)
        )
        (root / f"doc{i:02d}.txt").write_text(words)
    return root


# A folder mixing every format (issue 24, "Done when"): each document on its own topic, a
# PDF whose third page alone answers QUESTIONS["page"], a Word file whose "Troubleshooting
# > Network errors" section alone answers QUESTIONS["section"], and hostile files.
PDF_PAGES = [
    "The lighthouse keeper climbs the tower at dusk to light the lamp. "
    * 3
    + "Every morning the keeper records wind, visibility and passing ships in the log book, "
    "polishes the great Fresnel lens, and trims the wick so the beam stays bright all night.",
    "Bread rises because yeast ferments the sugars in the dough and releases carbon dioxide. "
    "Kneading develops gluten, an elastic network that traps the gas; a warm kitchen speeds "
    "the proof, and a hot oven sets the crumb before the bubbles collapse. " * 2,
    "A honeybee colony swarms in late spring when the hive becomes crowded. The old queen "
    "leaves with about half of the worker bees to found a new colony, while the workers left "
    "behind raise a new queen from a royal cell. Beekeepers prevent swarming by giving the "
    "colony more room or by splitting the hive before the swarming season begins. " * 2,
    "Glaciers form where more snow falls each winter than melts each summer. The snow "
    "compacts into firn and then into dense blue ice, which flows downhill under its own "
    "weight, carving U-shaped valleys and leaving moraines of rock where it melts. " * 2,
]
HANDBOOK = [
    ("heading1", "Installing the client"),
    (
        "p",
        "Run the installer for your operating system and sign in with your company "
        "account. The client needs 2 GB of disk space, a 64-bit processor and a screen of "
        "at least 1280 by 800 pixels. On a managed laptop the software centre installs it "
        "for you; on a personal machine you need administrator rights. After the first "
        "start the client asks which folders to synchronise and how much space to keep free.",
    ),
    ("heading1", "Troubleshooting"),
    ("heading2", "Network errors"),
    (
        "p",
        "Most connection problems come from the path between your machine and our servers, "
        "not from the client itself, and the status bar shows which server it tried last. "
        "If a download stalls or times out behind a corporate proxy, set the HTTPS_PROXY "
        "environment variable to the proxy address and retry; ask your IT department for "
        "the proxy host and port. A firewall that blocks port 443 causes the same timeout, "
        "and so does a proxy that inspects TLS traffic without the company certificate "
        "installed: import the certificate, restart the client and try the download again.",
    ),
    ("heading2", "Printing problems"),
    (
        "p",
        "When a printer prints blank pages, replace the toner cartridge and run the head "
        "cleaning utility from the printer settings menu.",
    ),
    ("heading1", "Licensing"),
    (
        "p",
        "Each licence covers one named user on up to three devices; transfer a licence from "
        "the account page when a colleague leaves.",
    ),
]
OTHER_DOCS = {
    "violins.html": (
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>String instruments</title>"
        "</head><body><nav>Home | Shop</nav><h1>Violin</h1><p>The violin has four strings "
        "tuned in perfect fifths, G D A E. The player draws a bow strung with horsehair, "
        "coated with rosin, across the strings.</p></body></html>"
    ),
    "notes/volcanoes.md": (
        "# Volcanoes\n\nMagma rises through cracks in the crust because it is lighter than "
        "the rock around it, and erupts as lava, ash and gas when the pressure is released."
    ),
    "tides.txt": (
        "Tides are caused by the gravitational pull of the moon and, to a lesser degree, the "
        "sun on the oceans; most coasts see two high tides and two low tides each day."
    ),
}
QUESTIONS = {
    "page": "Why does a bee colony swarm, and when does it happen?",
    "section": "The download times out behind our company proxy. What should I do?",
    "violins.html": "How are the strings of a violin tuned?",
    "notes/volcanoes.md": "Why does magma rise and erupt from a volcano?",
    "tides.txt": "What causes the ocean tides?",
}
ANSWER_PAGE = 3
ANSWER_SECTION = ["Troubleshooting", "Network errors"]
HOSTILE_REASONS = {  # file -> a phrase its quarantine reason contains
    "scan.pdf": "no text layer",
    "locked.pdf": "password",
    "truncated.pdf": "unreadable PDF",
    "fake.docx": "not a .docx",
}


def write_mixed_folder(root, hostile: bool = True):
    """The mixed folder under `root`: {relative key: bytes} of what it holds."""
    from pathlib import Path

    from tools.sample_documents import docx, pdf

    files: dict[str, bytes] = {
        "field-manual.pdf": pdf(
            PDF_PAGES,
            title="Field manual",
            author="A. Keeper",
            outline=[("Lights", 0, 1), ("Kitchen", 1, 1), ("Bees", 2, 1), ("Ice", 3, 1)],
        ),
        "handbook.docx": docx(HANDBOOK, title="Client handbook", author="IT"),
        **{k: v.encode() for k, v in OTHER_DOCS.items()},
    }
    if hostile:
        good = pdf(["A page that will be cut in half."])
        files |= {
            "scan.pdf": pdf(["", ""], image_only=True),
            "locked.pdf": pdf(["secret"], user_password="pw"),
            "truncated.pdf": good[: len(good) // 2],
            "fake.docx": b"PK\x03\x04 not really a zip",
        }
    root = Path(root)
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files
