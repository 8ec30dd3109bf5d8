//! The shape of a graph's flow, over successor lists (node indices, `None` standing for
//! the end of a run): which nodes the start reaches, and which loops no node can leave.

/// Whether each node can be reached from `start`.
pub(super) fn reachable(successors: &[Vec<Option<usize>>], start: usize) -> Vec<bool> {
    let mut reached = vec![false; successors.len()];
    let mut stack = vec![start];
    reached[start] = true;
    while let Some(node) = stack.pop() {
        for &next in successors[node].iter().flatten() {
            if !reached[next] {
                reached[next] = true;
                stack.push(next);
            }
        }
    }
    reached
}

/// The loops a run cannot leave: each strongly connected part that loops (two nodes or
/// more, or one with an edge to itself) in which no node that `chooses` its way (by a
/// condition, or a tool that picks its next node) may lead out of the part or end the run.
pub(super) fn loops_without_exit(successors: &[Vec<Option<usize>>], chooses: &[bool]) -> Vec<Vec<usize>> {
    strongly_connected(successors)
        .into_iter()
        .filter(|part| part.len() > 1 || successors[part[0]].contains(&Some(part[0])))
        .filter(|part| {
            !part.iter().any(|&node| {
                chooses[node]
                    && successors[node]
                        .iter()
                        .any(|next| next.is_none_or(|next| !part.contains(&next)))
            })
        })
        .collect()
}

/// The strongly connected components of a graph given by successor lists (Tarjan's
/// algorithm, iterative), each sorted by node index, ordered by their first node.
pub(super) fn strongly_connected(successors: &[Vec<Option<usize>>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = successors.len();
    let mut order = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if order[root] != UNSEEN {
            continue;
        }
        // (node, how many of its successors have been looked at)
        let mut work = vec![(root, 0)];
        order[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut seen)) = work.last_mut() {
            let next = successors[node].iter().flatten().nth(*seen).copied();
            *seen += 1;
            match next {
                Some(next) if order[next] == UNSEEN => {
                    order[next] = counter;
                    low[next] = counter;
                    counter += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    work.push((next, 0));
                }
                Some(next) => {
                    if on_stack[next] {
                        low[node] = low[node].min(order[next]);
                    }
                }
                None => {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        low[parent] = low[parent].min(low[node]);
                    }
                    if low[node] == order[node] {
                        let mut component = Vec::new();
                        while let Some(member) = stack.pop() {
                            on_stack[member] = false;
                            component.push(member);
                            if member == node {
                                break;
                            }
                        }
                        component.sort_unstable();
                        components.push(component);
                    }
                }
            }
        }
    }
    components.sort_by_key(|component| component[0]);
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_strongly_connected_components() {
        // 0 → 1 → 2 → 1, 2 → 3, 3 → 3
        let successors = vec![
            vec![Some(1)],
            vec![Some(2)],
            vec![Some(1), Some(3)],
            vec![Some(3), None],
        ];
        assert_eq!(strongly_connected(&successors), vec![vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn reaches_along_every_successor() {
        // 0 → 1 → end, 2 → 0: 2 is cut off.
        let successors = vec![vec![Some(1)], vec![None], vec![Some(0)]];
        assert_eq!(reachable(&successors, 0), [true, true, false]);
        assert_eq!(reachable(&successors, 2), [true, true, true]);
    }

    #[test]
    fn a_loop_is_left_only_through_a_node_that_chooses() {
        // 0 → 1 → 2 → 1, where 2 may also end the run.
        let successors = vec![vec![Some(1)], vec![Some(2)], vec![Some(1), None]];
        assert_eq!(
            loops_without_exit(&successors, &[false, false, true]),
            Vec::<Vec<usize>>::new()
        );
        // A static edge out of the loop does not count: it is never a choice.
        assert_eq!(loops_without_exit(&successors, &[false, false, false]), [vec![1, 2]]);
        // A node choosing among targets inside the loop does not leave it either.
        let inside = vec![vec![Some(1)], vec![Some(0), Some(1)]];
        assert_eq!(loops_without_exit(&inside, &[false, true]), [vec![0, 1]]);
        // A self-loop is a loop.
        assert_eq!(loops_without_exit(&[vec![Some(0)]], &[false]), [vec![0]]);
    }
}
