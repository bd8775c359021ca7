package templates_test

import (
	"fmt"
	"log"
	"time"

	"github.com/floodgate-dev/floodgate/templates"
)

func ExampleSet_Render() {
	set, err := templates.New("") // the embedded defaults; pass a directory to override them
	if err != nil {
		log.Fatal(err)
	}
	r, err := set.Render("notification", templates.Data{
		Name:      "Alice",
		To:        "alice@example.com",
		App:       "Example App",
		ExpiresIn: 24 * time.Hour,
		Values: map[string]string{
			// A line break in a value cannot reach the Subject header.
			"subject": "Your export\r\nis ready",
			"body":    "Your data export has finished.",
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Subject)
	// Output: Your export is ready
}
