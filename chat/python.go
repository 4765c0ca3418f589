package chat

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/exec"
)

// What chat templates expect of Hugging Face's Jinja environment beyond
// gonja's built-ins.

// strMethodNames are Python's str methods, copied from gonja's set.
var strMethodNames = []string{"capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs",
	"find", "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
	"islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
	"lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
	"rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
	"upper", "zfill"}

// methods are gonja's methods with Python's strip, lstrip and rstrip: with
// no argument (or None) they strip whitespace, else any of the given
// characters (gonja's lstrip and rstrip fail without an argument).
func methods() exec.Methods {
	str := map[string]exec.Method[string]{}
	for _, name := range strMethodNames {
		if m, ok := builtins.Methods.Str.Get(name); ok {
			str[name] = m
		}
	}
	strip := func(trim func(string, string) string, space func(string, func(rune) bool) string) exec.Method[string] {
		return func(self string, _ *exec.Value, args *exec.VarArgs) (any, error) {
			if len(args.Args) > 1 || len(args.KwArgs) > 0 {
				return nil, fmt.Errorf("strip takes at most one argument")
			}
			if len(args.Args) == 0 || args.Args[0].IsNil() {
				return space(self, unicode.IsSpace), nil
			}
			if !args.Args[0].IsString() {
				return nil, fmt.Errorf("strip arg must be None or str")
			}
			return trim(self, args.Args[0].String()), nil
		}
	}
	str["strip"] = strip(strings.Trim, strings.TrimFunc)
	str["lstrip"] = strip(strings.TrimLeft, strings.TrimLeftFunc)
	str["rstrip"] = strip(strings.TrimRight, strings.TrimRightFunc)
	m := builtins.Methods
	m.Str = exec.NewMethodSet(str)
	return m
}

// strftimeNow is transformers' strftime_now(format): the current local
// time formatted with Python's strftime directives.
func strftimeNow(_ *exec.Evaluator, params *exec.VarArgs) *exec.Value {
	if len(params.Args) != 1 || !params.Args[0].IsString() {
		return exec.ValueError(fmt.Errorf("strftime_now takes one format string"))
	}
	return exec.AsValue(strftime(time.Now(), params.Args[0].String()))
}

// strftime formats t with the common strftime directives; others are kept
// as written.
func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'd':
			fmt.Fprintf(&b, "%02d", t.Day())
		case 'm':
			fmt.Fprintf(&b, "%02d", int(t.Month()))
		case 'Y':
			fmt.Fprintf(&b, "%d", t.Year())
		case 'y':
			fmt.Fprintf(&b, "%02d", t.Year()%100)
		case 'b':
			b.WriteString(t.Format("Jan"))
		case 'B':
			b.WriteString(t.Format("January"))
		case 'a':
			b.WriteString(t.Format("Mon"))
		case 'A':
			b.WriteString(t.Format("Monday"))
		case 'H':
			fmt.Fprintf(&b, "%02d", t.Hour())
		case 'I':
			fmt.Fprintf(&b, "%02d", (t.Hour()+11)%12+1)
		case 'p':
			b.WriteString(t.Format("PM"))
		case 'M':
			fmt.Fprintf(&b, "%02d", t.Minute())
		case 'S':
			fmt.Fprintf(&b, "%02d", t.Second())
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
