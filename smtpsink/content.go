package smtpsink

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // registers the charsets of golang.org/x/text
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Content is a message's decoded content: its MIME tree (RFC 2045, RFC 2046)
// walked, each text part's Content-Transfer-Encoding (quoted-printable,
// base64) undone and its charset converted to UTF-8.
type Content struct {
	// Text is the first text/plain part that is not an attachment.
	Text string `json:"text"`
	// HTML is the first text/html part that is not an attachment.
	HTML string `json:"html"`
	// Links lists the distinct URLs found in Text and HTML, in order of
	// first appearance: href attributes of the HTML and http, https and
	// mailto URLs of the text.
	Links []Link `json:"links"`
	// Headers lists the top-level header fields in order, unfolded, values
	// RFC 2047 decoded where they decode.
	Headers []HeaderField `json:"headers"`
	// Attachments lists the other leaf parts.
	Attachments []Attachment `json:"attachments"`
	// DecodeError says what could not be decoded, if anything; what was
	// decoded before is kept.
	DecodeError string `json:"decode_error"`
}

// Link is one URL found in a message.
type Link struct {
	// URL is the address as written in the message, entities decoded.
	URL string `json:"url"`
	// Text is the link text of the first HTML anchor with this URL; empty
	// for a URL found only in the text part.
	Text string `json:"text"`
	// In names the parts it was found in: "html", "text" or both.
	In []string `json:"in"`
}

// HeaderField is one header field.
type HeaderField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Attachment is a leaf MIME part other than the displayed text and HTML.
type Attachment struct {
	// ContentType is the media type, such as "application/pdf".
	ContentType string `json:"content_type"`
	// Filename is the Content-Disposition or Content-Type name, if any.
	Filename string `json:"filename"`
	// Size is the decoded size in bytes.
	Size int64 `json:"size"`
}

// Detail is a stored message with its decoded content, as
// GET /api/messages/{id} returns it.
type Detail struct {
	Message
	Content
}

// Decoding limits: a hostile message must not make the API slow.
const (
	maxParts     = 200
	maxTextBytes = 4 << 20
	maxLinks     = 500
)

// Decode decodes raw, a message as received. It never fails: what cannot
// be decoded is described in DecodeError and the rest is kept.
func Decode(raw []byte) Content {
	c := Content{Links: []Link{}, Headers: []HeaderField{}, Attachments: []Attachment{}}
	e, err := message.Read(bytes.NewReader(raw))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		c.DecodeError = fmt.Sprintf("read header: %v", err)
		return c
	}
	if err != nil {
		c.DecodeError = err.Error()
	}
	for f := e.Header.Fields(); f.Next(); {
		v, err := f.Text()
		if err != nil {
			v = f.Value()
		}
		// The name as sent: Key is canonicalised ("Message-Id").
		name := f.Key()
		if raw, err := f.Raw(); err == nil {
			if n, _, ok := bytes.Cut(raw, []byte{':'}); ok {
				name = string(bytes.TrimSpace(n))
			}
		}
		c.Headers = append(c.Headers, HeaderField{Name: validUTF8(name), Value: validUTF8(v)})
	}

	parts := 0
	var gotText, gotHTML bool
	walkErr := e.Walk(func(_ []int, p *message.Entity, err error) error {
		if parts++; parts > maxParts {
			return fmt.Errorf("more than %d MIME parts", maxParts)
		}
		if err != nil && c.DecodeError == "" {
			c.DecodeError = err.Error()
		}
		if p.MultipartReader() != nil {
			return nil
		}
		mt, params, _ := p.Header.ContentType()
		if mt == "" {
			mt = "text/plain"
		}
		disp, dparams, _ := p.Header.ContentDisposition()
		attached := strings.EqualFold(disp, "attachment")
		switch {
		case mt == "text/plain" && !attached && !gotText:
			s, err := readText(p.Body)
			c.Text, gotText = s, true
			return err
		case mt == "text/html" && !attached && !gotHTML:
			s, err := readText(p.Body)
			c.HTML, gotHTML = s, true
			return err
		}
		n, err := io.Copy(io.Discard, p.Body)
		name := dparams["filename"]
		if name == "" {
			name = params["name"]
		}
		c.Attachments = append(c.Attachments, Attachment{ContentType: mt, Filename: validUTF8(name), Size: n})
		return err
	})
	if walkErr != nil && c.DecodeError == "" {
		c.DecodeError = walkErr.Error()
	}
	c.Links = findLinks(c.HTML, c.Text)
	return c
}

var errTextTooLong = fmt.Errorf("text part longer than %d bytes, cut", maxTextBytes)

func readText(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTextBytes+1))
	if err == nil && len(b) > maxTextBytes {
		b, err = b[:maxTextBytes], errTextTooLong
	}
	return validUTF8(string(b)), err
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// textURL finds URLs in plain text; trailing punctuation is trimmed after.
var textURL = regexp.MustCompile(`(?i)\b(?:https?://|mailto:)[^\s<>"']+`)

// findLinks returns the distinct URLs of the HTML's href attributes and of
// the text, in order.
func findLinks(htmlBody, text string) []Link {
	links := []Link{}
	index := make(map[string]int)
	add := func(url, label, in string) {
		url = strings.TrimSpace(url)
		if url == "" || strings.HasPrefix(url, "#") {
			return
		}
		i, ok := index[url]
		if !ok {
			if len(links) >= maxLinks {
				return
			}
			index[url] = len(links)
			links = append(links, Link{URL: url, Text: label, In: []string{in}})
			return
		}
		l := &links[i]
		if l.Text == "" {
			l.Text = label
		}
		if l.In[len(l.In)-1] != in {
			l.In = append(l.In, in)
		}
	}
	for _, a := range htmlAnchors(htmlBody) {
		add(a.URL, a.Text, "html")
	}
	for _, u := range textURL.FindAllString(text, maxLinks) {
		add(strings.TrimRight(u, ".,;:!?)]}"), "", "text")
	}
	return links
}

// htmlAnchors returns the href and text of every a and area element.
func htmlAnchors(body string) []Link {
	if body == "" {
		return nil
	}
	var out []Link
	z := html.NewTokenizer(strings.NewReader(body))
	open := -1 // index in out of the a element being read
	var label strings.Builder
	for {
		switch z.Next() {
		case html.ErrorToken:
			// io.EOF or a tokenizer error: keep what was found.
			if open >= 0 {
				out[open].Text = collapseSpace(label.String())
			}
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			a := atom.Lookup(name)
			if a != atom.A && a != atom.Area {
				continue
			}
			if open >= 0 {
				out[open].Text = collapseSpace(label.String())
				open = -1
			}
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if string(k) == "href" {
					out = append(out, Link{URL: string(v)})
					if a == atom.A {
						open = len(out) - 1
						label.Reset()
					}
					break
				}
			}
		case html.TextToken:
			if open >= 0 && label.Len() < 1024 {
				label.Write(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); atom.Lookup(name) == atom.A && open >= 0 {
				out[open].Text = collapseSpace(label.String())
				open = -1
			}
		}
	}
}

func collapseSpace(s string) string { return strings.Join(strings.Fields(s), " ") }
