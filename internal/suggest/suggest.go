// Package suggest finds the near misses behind "did you mean …?" hints in
// policy, template and kind errors.
package suggest

// Closest returns the candidate nearest to word by edit distance (optimal
// string alignment: insertions, deletions, substitutions and transpositions
// of adjacent characters each cost one), and whether it is near enough to be
// a likely misspelling: at most one edit for words of up to four
// characters, two for longer ones. An exact match is not a near miss. Ties
// go to the earlier candidate.
func Closest(word string, candidates []string) (string, bool) {
	limit := 1
	if len([]rune(word)) > 4 {
		limit = 2
	}
	best, bestDist := "", limit+1
	for _, c := range candidates {
		if c == word {
			continue
		}
		if d := Distance(word, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best, best != ""
}

// Distance returns the optimal string alignment distance between a and b,
// counted in runes.
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows of the dynamic programme: two back for transpositions.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
