//! A line diff in the unified format (`--- expected`, `+++ actual`, `@@` hunks with three
//! lines of context), for `switchboard test` failures. Payloads are small (a message, a JSON
//! body pretty-printed): a longest-common-subsequence table over the lines is enough.

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Above this many cells (lines × lines) the table is not built: every line of `expected` is
/// shown removed and every line of `actual` added.
const MAX_CELLS: usize = 16_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// The unified diff of `expected` and `actual` (split into lines), headed by the two names;
/// empty when they are equal.
///
/// ```
/// let d = engine::unified_diff::diff("expected", "actual", "a\nb\nc\n", "a\nB\nc\n");
/// assert_eq!(d, "--- expected\n+++ actual\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
/// ```
pub fn diff(expected_name: &str, actual_name: &str, expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a == b {
        return String::new();
    }
    let ops = edit_script(&a, &b);
    let mut out = format!("--- {expected_name}\n+++ {actual_name}\n");
    // Positions (in `ops`) of the changes, grouped into hunks whose context overlaps.
    let changes: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0 != Op::Same).collect();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for &c in &changes {
        let start = c.saturating_sub(CONTEXT);
        let end = (c + CONTEXT + 1).min(ops.len());
        match groups.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => groups.push((start, end)),
        }
    }
    for (start, end) in groups {
        // Line numbers (1-based) of the hunk's first line in each side.
        let (mut a_line, mut b_line) = (1, 1);
        for (op, _) in &ops[..start] {
            match op {
                Op::Same => {
                    a_line += 1;
                    b_line += 1;
                }
                Op::Removed => a_line += 1,
                Op::Added => b_line += 1,
            }
        }
        let hunk = &ops[start..end];
        let a_count = hunk.iter().filter(|(op, _)| *op != Op::Added).count();
        let b_count = hunk.iter().filter(|(op, _)| *op != Op::Removed).count();
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a_line, a_count),
            range(b_line, b_count)
        ));
        for (op, line) in hunk {
            let mark = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            out.push(mark);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `start,count` as the unified format writes it (an empty side starts one line earlier).
fn range(start: usize, count: usize) -> String {
    match count {
        0 => format!("{},0", start - 1),
        _ => format!("{start},{count}"),
    }
}

/// The lines of both sides in order, each kept, removed or added.
fn edit_script<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    // Common head and tail need no table.
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut ops: Vec<(Op, &str)> = a[..head].iter().map(|l| (Op::Same, *l)).collect();
    if am.len().saturating_mul(bm.len()) > MAX_CELLS {
        ops.extend(am.iter().map(|l| (Op::Removed, *l)));
        ops.extend(bm.iter().map(|l| (Op::Added, *l)));
    } else {
        // lcs[i][j]: length of the longest common subsequence of am[i..] and bm[j..].
        let (n, m) = (am.len(), bm.len());
        let mut lcs = vec![0u32; (n + 1) * (m + 1)];
        let at = |i: usize, j: usize| i * (m + 1) + j;
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[at(i, j)] = if am[i] == bm[j] {
                    lcs[at(i + 1, j + 1)] + 1
                } else {
                    lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push((Op::Same, am[i]));
                i += 1;
                j += 1;
            } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
                ops.push((Op::Added, bm[j]));
                j += 1;
            } else {
                ops.push((Op::Removed, am[i]));
                i += 1;
            }
        }
        // Removed lines before added ones within a change, as diff(1) shows them.
        let mut k = head;
        while k < ops.len() {
            if ops[k].0 == Op::Same {
                k += 1;
                continue;
            }
            let end = ops[k..]
                .iter()
                .position(|(op, _)| *op == Op::Same)
                .map_or(ops.len(), |p| k + p);
            ops[k..end].sort_by_key(|(op, _)| *op != Op::Removed);
            k = end;
        }
    }
    ops.extend(a[a.len() - tail..].iter().map(|l| (Op::Same, *l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(diff("e", "a", "x\ny\n", "x\ny"), "");
    }

    #[test]
    fn hunks_keep_three_lines_of_context_and_merge_when_close() {
        let a: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let b = a.replace("l5\n", "L5\n").replace("l17\n", "");
        let d = diff("expected", "actual", &a, &b);
        assert_eq!(
            d,
            "--- expected\n+++ actual\n\
             @@ -2,7 +2,7 @@\n l2\n l3\n l4\n-l5\n+L5\n l6\n l7\n l8\n\
             @@ -14,7 +14,6 @@\n l14\n l15\n l16\n-l17\n l18\n l19\n l20\n"
        );
    }

    #[test]
    fn one_side_empty() {
        assert_eq!(
            diff("e", "a", "", "new\n"),
            "--- e\n+++ a\n@@ -0,0 +1,1 @@\n+new\n"
        );
        assert_eq!(
            diff("e", "a", "old\n", ""),
            "--- e\n+++ a\n@@ -1,1 +0,0 @@\n-old\n"
        );
    }
}
