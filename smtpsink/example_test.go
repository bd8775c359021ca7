package smtpsink_test

import (
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/floodgate-dev/floodgate/smtpsink"
)

// A test starts a sink on a free port, sends to it, and waits for the
// message instead of sleeping.
func Example() {
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-"})
	if err != nil {
		log.Fatal(err)
	}
	if err := sink.Start(); err != nil {
		log.Fatal(err)
	}
	defer sink.Shutdown(context.Background())

	c, err := smtp.Dial(sink.SMTPAddr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	msg := "From: app@example.org\r\nTo: user@example.com\r\nSubject: =?utf-8?q?Bienvenue_=C3=A0_bord?=\r\n\r\nHello.\r\n"
	if err := c.SendMail("app@example.org", []string{"user@example.com"}, strings.NewReader(msg)); err != nil {
		log.Fatal(err)
	}
	// A permfail+ recipient is refused as a hard bounce.
	err = c.SendMail("app@example.org", []string{"permfail+1@example.com"}, strings.NewReader(msg))
	fmt.Println("permfail+:", err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 1, smtpsink.Query{To: "user@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msgs[0].Subject, msgs[0].DKIM[0].Result)
	st := sink.Stats()
	fmt.Println("received", st.Received, "rejected", st.Rejected)
	// Output:
	// permfail+: SMTP error 550: No such user: permfail+ recipient
	// Bienvenue à bord none
	// received 1 rejected 1
}

// A test reads the link of a quoted-printable email from the decoded
// content, without decoding MIME itself.
func ExampleServer_Detail() {
	sink, err := smtpsink.New(smtpsink.Config{SMTPAddr: "127.0.0.1:0", HTTPAddr: "-"})
	if err != nil {
		log.Fatal(err)
	}
	if err := sink.Start(); err != nil {
		log.Fatal(err)
	}
	defer sink.Shutdown(context.Background())

	msg := "From: app@example.org\r\nTo: ada@example.com\r\nSubject: Reset\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Reset it here: https://app.example.org/reset?token=3Dq7Z0c3VwZXItc2VjcmV0LXRva2=\r\n" +
		"VuLXRoYXQtaXMtbG9uZw\r\n"
	c, err := smtp.Dial(sink.SMTPAddr())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("app@example.org", []string{"ada@example.com"}, strings.NewReader(msg)); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := sink.Wait(ctx, 1, smtpsink.Query{To: "ada@example.com"})
	if err != nil {
		log.Fatal(err)
	}
	d, _ := sink.Detail(msgs[0].ID)
	fmt.Println(d.Links[0].URL)
	// Output:
	// https://app.example.org/reset?token=q7Z0c3VwZXItc2VjcmV0LXRva2VuLXRoYXQtaXMtbG9uZw
}
