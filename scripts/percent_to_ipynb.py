"""Write a notebook (no outputs) from a percent-format script: `# %%` code cells and
`# %% [markdown]` cells whose lines start with `# `. Used to author the book's chapters:
    python scripts/percent_to_ipynb.py chapter.py book/chapter.ipynb
"""
import sys

import nbformat


def convert(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    cells, kind, lines, tags = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.split("\n"))
            cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            c = nbformat.v4.new_code_cell(body)
            if tags:
                c.metadata["tags"] = list(tags)
            cells.append(c)

    for line in text.split("\n"):
        if line.startswith("# %%"):
            flush()
            header = line[4:].strip()
            kind = "markdown" if "[markdown]" in header else "code"
            tags = []
            if "tags=" in header:
                tags = header.split("tags=", 1)[1].strip("[]\" ").replace('"', "").split(",")
                tags = [t.strip() for t in tags if t.strip()]
            lines = []
        else:
            lines.append(line)
    flush()
    nb.cells = cells
    return nb


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nbformat.write(convert(open(src).read()), dst)
