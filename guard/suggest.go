package guard

import (
	"fmt"

	"github.com/floodgate-dev/floodgate/internal/suggest"
)

// didYouMean returns `; did you mean "x"?` when word is a near miss of one
// of names, and "" otherwise.
func didYouMean(word string, names []string) string {
	if s, ok := suggest.Closest(word, names); ok {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}
