"""A verified patch as GitHub review suggestions (pure).

When Shepherd cannot push (a fork without maintainer edits, a protected branch), a small fix is
posted as ```` ```suggestion ```` review comments, which the author applies with one click:
https://docs.github.com/en/pull-requests/collaborating-with-pull-requests/reviewing-changes-in-pull-requests/incorporating-feedback-in-your-pull-request
Each hunk replaces the head's lines it covers. Hunks that only add lines at the very top of a
file, new and deleted files cannot be suggestions; then the caller posts the diff instead.
"""

from __future__ import annotations

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from bot.kernel import JSONObject


def _fence(text: str) -> str:
    longest = max((len(run) for run in text.split("\n") if set(run) == {"`"}), default=0)
    return "`" * max(3, longest + 1)


def suggestions(patch: str, *, max_comments: int = 20) -> list[JSONObject] | None:
    """Review comments for ``pulls/create-review``, or None when the patch cannot be expressed
    as suggestions on the head's lines."""
    try:
        files = PatchSet(patch)
    except UnidiffParseError:
        return None
    comments: list[JSONObject] = []
    for patched in files:
        # Not unidiff's is_removed_file: it also says so of a hunk deleting a file's first lines.
        if "/dev/null" in (patched.source_file, patched.target_file) or patched.is_binary_file:
            return None
        for hunk in patched:
            old = [line for line in hunk if not line.is_added]
            if not old:
                return None  # pure insertion before line 1: nothing to anchor the comment to
            new_text = "".join(line.value for line in hunk if not line.is_removed)
            first = hunk.source_start
            last = hunk.source_start + hunk.source_length - 1
            fence = _fence(new_text)
            comment: JSONObject = {
                "path": patched.path,
                "line": last,
                "side": "RIGHT",
                "body": f"{fence}suggestion\n{new_text.rstrip(chr(10))}\n{fence}",
            }
            if first < last:
                comment["start_line"] = first
                comment["start_side"] = "RIGHT"
            comments.append(comment)
            if len(comments) > max_comments:
                return None
    return comments or None
