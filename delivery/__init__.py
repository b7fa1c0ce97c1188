"""The project's own steps of its GitHub workflows: what each one does with Pulumi, and what it reports.

Each step is a command of `python -m delivery` (a script under scripts/ runs it), so a workflow and the
tests run the same code: the workflow only adds what talks to GitHub (posting a comment, listing the
open pull requests), and hands it files and lines.
"""
