//! The dependency graph: start waves and cycles, on plain node indices.
//!
//! Nodes are `0..n` and `deps[i]` lists the nodes `i` depends on. Keeping this free of
//! service types lets the algorithms be property-tested on random graphs; the config
//! module maps names to indices and back. Everything here is iterative, so a large graph
//! cannot overflow the stack.

/// Groups nodes into start waves: wave 0 has no dependencies, and every other node sits
/// in the wave right after its latest dependency. This is the earliest each node can
/// start, so the waves are as wide (as parallel) as the graph allows. Nodes within a
/// wave are in index order.
///
/// Fails with the nodes that could not be placed when the graph has a cycle: the
/// cycles themselves and whatever depends on them.
pub fn waves(deps: &[Vec<usize>]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = deps.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut remaining: Vec<usize> = vec![0; n];
    for (node, node_deps) in deps.iter().enumerate() {
        for &dep in node_deps {
            dependents[dep].push(node);
            remaining[node] += 1;
        }
    }
    let mut current: Vec<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut placed = 0;
    let mut result = Vec::new();
    while !current.is_empty() {
        placed += current.len();
        let mut next = Vec::new();
        for &node in &current {
            for &dependent in &dependents[node] {
                remaining[dependent] -= 1;
                if remaining[dependent] == 0 {
                    next.push(dependent);
                }
            }
        }
        next.sort_unstable();
        result.push(std::mem::replace(&mut current, next));
    }
    if placed == n {
        Ok(result)
    } else {
        Err((0..n).filter(|&i| remaining[i] > 0).collect())
    }
}

/// One cycle per strongly connected component that has one, as a path that starts and
/// ends at the same node (`[a, b, c, a]`: a depends on b, b on c, c on a). Each path is
/// the shortest cycle through the component's lowest node, so output is deterministic.
pub fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let components = strongly_connected(deps);
    let mut found = Vec::new();
    for component in components {
        let start = component[0];
        let is_cycle = component.len() > 1 || deps[start].contains(&start);
        if !is_cycle {
            continue;
        }
        let mut member = vec![false; deps.len()];
        for &node in &component {
            member[node] = true;
        }
        if let Some(path) = shortest_cycle_through(deps, start, &member) {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Breadth-first search from `start` back to itself, staying inside `member`.
fn shortest_cycle_through(
    deps: &[Vec<usize>],
    start: usize,
    member: &[bool],
) -> Option<Vec<usize>> {
    // parent[x]: the node before x on the shortest path from `start` to x.
    let mut parent: Vec<Option<usize>> = vec![None; deps.len()];
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<usize> = deps[node].iter().copied().filter(|&d| member[d]).collect();
        next.sort_unstable();
        for dep in next {
            if dep == start {
                let mut path = vec![node];
                while let Some(&at) = path.last().filter(|&&at| at != start) {
                    path.push(parent[at]?);
                }
                path.reverse();
                path.push(start);
                return Some(path);
            }
            if parent[dep].is_none() {
                parent[dep] = Some(node);
                queue.push_back(dep);
            }
        }
    }
    None
}

/// Kosaraju's algorithm with explicit stacks. Components come out with their nodes
/// sorted, and ordered by their lowest node.
fn strongly_connected(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = deps.len();
    // Pass 1: finishing order on the graph.
    let mut visited = vec![false; n];
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if visited[root] {
            continue;
        }
        visited[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                if !visited[dep] {
                    visited[dep] = true;
                    stack.push((dep, 0));
                }
            } else {
                order.push(node);
                stack.pop();
            }
        }
    }
    // Pass 2: on the reversed graph, in reverse finishing order.
    let mut reversed: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (node, node_deps) in deps.iter().enumerate() {
        for &dep in node_deps {
            reversed[dep].push(node);
        }
    }
    let mut assigned = vec![false; n];
    let mut components = Vec::new();
    for &root in order.iter().rev() {
        if assigned[root] {
            continue;
        }
        assigned[root] = true;
        let mut component = vec![root];
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            for &prev in &reversed[node] {
                if !assigned[prev] {
                    assigned[prev] = true;
                    component.push(prev);
                    stack.push(prev);
                }
            }
        }
        component.sort_unstable();
        components.push(component);
    }
    components.sort();
    components
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waves_of_a_diamond() {
        // 0 <- 1, 0 <- 2, {1, 2} <- 3, and 4 alone.
        let deps = vec![vec![], vec![0], vec![0], vec![1, 2], vec![]];
        assert_eq!(waves(&deps), Ok(vec![vec![0, 4], vec![1, 2], vec![3]]));
    }

    #[test]
    fn a_node_waits_for_its_latest_dependency() {
        // 2 depends on 0 (wave 0) and 1 (wave 1): it must go to wave 2.
        let deps = vec![vec![], vec![0], vec![0, 1]];
        assert_eq!(waves(&deps), Ok(vec![vec![0], vec![1], vec![2]]));
    }

    #[test]
    fn cycles_are_reported_as_closed_paths() {
        // 0 -> 1 -> 2 -> 0, 3 depends on the cycle, 4 -> 4.
        let deps = vec![vec![1], vec![2], vec![0], vec![0], vec![4]];
        assert_eq!(waves(&deps), Err(vec![0, 1, 2, 3, 4]));
        assert_eq!(cycles(&deps), vec![vec![0, 1, 2, 0], vec![4, 4]]);
    }

    #[test]
    fn no_cycles_in_a_dag() {
        let deps = vec![vec![], vec![0], vec![0, 1]];
        assert!(cycles(&deps).is_empty());
    }

    /// A random DAG: edges only go from a node to nodes before it in a random order.
    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..40).prop_flat_map(|n| {
            let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
            let edges = proptest::collection::vec((0..n, 0..n), 0..n * 3);
            (order, edges).prop_map(move |(order, edges)| {
                let mut deps = vec![Vec::new(); n];
                for (a, b) in edges {
                    let (early, late) = if a < b { (a, b) } else { (b, a) };
                    if early != late && !deps[order[late]].contains(&order[early]) {
                        deps[order[late]].push(order[early]);
                    }
                }
                deps
            })
        })
    }

    /// A random graph with at least one cycle planted in it.
    fn cyclic() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (2usize..30).prop_flat_map(|n| {
            let edges = proptest::collection::vec((0..n, 0..n), 0..n * 2);
            let planted =
                proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 1..=n).prop_shuffle();
            (edges, planted).prop_map(move |(edges, planted)| {
                let mut deps = vec![Vec::new(); n];
                for (a, b) in edges {
                    deps[a].push(b);
                }
                for (i, &node) in planted.iter().enumerate() {
                    deps[node].push(planted[(i + 1) % planted.len()]);
                }
                deps
            })
        })
    }

    proptest! {
        #[test]
        fn waves_put_every_node_after_its_dependencies_and_are_maximal(deps in dag()) {
            let waves = waves(&deps).expect("a DAG has waves");
            let mut wave_of = vec![usize::MAX; deps.len()];
            for (w, wave) in waves.iter().enumerate() {
                for &node in wave {
                    prop_assert_eq!(wave_of[node], usize::MAX, "node {} placed twice", node);
                    wave_of[node] = w;
                }
            }
            prop_assert!(wave_of.iter().all(|&w| w != usize::MAX), "every node placed");
            for (node, node_deps) in deps.iter().enumerate() {
                for &dep in node_deps {
                    prop_assert!(wave_of[dep] < wave_of[node], "{} before its dependency {}", node, dep);
                }
                // Maximal: no node could have started a wave earlier.
                if wave_of[node] > 0 {
                    prop_assert!(node_deps.iter().any(|&d| wave_of[d] == wave_of[node] - 1));
                }
            }
            prop_assert!(cycles(&deps).is_empty());
        }

        #[test]
        fn reported_cycles_are_real_cycles(deps in cyclic()) {
            prop_assert!(waves(&deps).is_err());
            let found = cycles(&deps);
            prop_assert!(!found.is_empty());
            for cycle in found {
                prop_assert!(cycle.len() >= 2);
                prop_assert_eq!(cycle.first(), cycle.last());
                for pair in cycle.windows(2) {
                    prop_assert!(deps[pair[0]].contains(&pair[1]), "{:?} is not an edge", pair);
                }
                let inner = &cycle[..cycle.len() - 1];
                let mut unique = inner.to_vec();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), inner.len(), "a simple cycle visits each node once");
            }
        }
    }
}
