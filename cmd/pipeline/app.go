package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/rs/zerolog/log"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// Exit codes.
const (
	exitOK        = 0
	exitError     = 1
	exitCancelled = 130 // 128 + SIGINT, as shells report an interrupted command
)

// errCancelled is returned by a command that stopped because of Ctrl-C.
var errCancelled = errors.New("cancelled")

// app holds what every subcommand shares: global flags, the logger and the
// output streams.
type app struct {
	logLevel string
	logJSON  bool

	log    zerolog.Logger
	stdout io.Writer
	stderr *os.File
}

// execute runs the command line args and returns the process exit code.
func execute(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errCancelled) || errors.Is(err, context.Canceled):
		a.log.Warn().Msg("cancelled")
		return exitCancelled
	default:
		a.printError(err)
		return exitError
	}
}

// rootCommand builds the command tree.
func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "pipeline",
		Short:         "Run, inspect and make GGUF language models",
		SilenceUsage:  true, // a failed run prints its error, not the usage text
		SilenceErrors: true, // execute prints errors on one line
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setupLogging()
		},
	}
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	root.PersistentFlags().BoolVar(&a.logJSON, "log-json", false, "write logs to stderr as JSON lines")
	root.AddCommand(
		a.runCommand(),
		a.benchCommand(),
		a.tokenizeCommand(),
		a.inspectCommand(),
		a.genModelCommand(),
		a.quantizeCommand(),
		a.serveCommand(),
		a.loadtestCommand(),
	)
	// Logging before the flags are parsed (a flag error) goes to the console.
	a.log = zerolog.New(zerolog.ConsoleWriter{Out: a.stderr, NoColor: true}).With().Timestamp().Logger()
	return root
}

// setupLogging configures the logger from --log-level and --log-json. The
// package-level zerolog logger is set too, for the library packages that log.
func (a *app) setupLogging() error {
	level, err := zerolog.ParseLevel(strings.ToLower(a.logLevel))
	if err != nil || a.logLevel == "" {
		return fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", a.logLevel)
	}
	var out io.Writer = a.stderr
	if !a.logJSON {
		out = zerolog.ConsoleWriter{Out: a.stderr, TimeFormat: "15:04:05", NoColor: !a.stderrIsTerminal()}
	}
	a.log = zerolog.New(out).Level(level).With().Timestamp().Logger()
	log.Logger = a.log
	zerolog.SetGlobalLevel(level)
	return nil
}

// printError writes err on one line to stderr: as a JSON log line under
// --log-json, else as plain text.
func (a *app) printError(err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if a.logJSON {
		a.log.Error().Str("error", msg).Msg("failed")
		return
	}
	fmt.Fprintf(a.stderr, "pipeline: error: %s\n", msg)
}

func (a *app) stderrIsTerminal() bool { return term.IsTerminal(int(a.stderr.Fd())) }

// progress returns a callback that draws a progress bar of bytes on stderr,
// and a function to call when the work is over. Where stderr is not a
// terminal there is no bar: progress is logged at debug level instead.
func (a *app) progress(what string) (func(done, total int64), func()) {
	if !a.stderrIsTerminal() {
		last := time.Now()
		return func(done, total int64) {
			if time.Since(last) >= time.Second || done == total {
				last = time.Now()
				a.log.Debug().Str("step", what).Int64("done", done).Int64("total", total).Msg("progress")
			}
		}, func() {}
	}
	var (
		mu  sync.Mutex
		bar *progressbar.ProgressBar
	)
	update := func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(a.stderr),
				progressbar.OptionSetDescription(what),
				progressbar.OptionShowBytes(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		_ = bar.Set64(done)
	}
	finish := func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			_ = bar.Finish()
		}
	}
	return update, finish
}

// checkFile returns a clear error when path (the value of flag) is not a
// readable regular file.
func checkFile(flag, path string) error {
	if path == "" {
		return fmt.Errorf("--%s: no file given", flag)
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("--%s %s: no such file", flag, path)
		}
		return fmt.Errorf("--%s: %w", flag, err)
	}
	if st.IsDir() {
		return fmt.Errorf("--%s %s: is a directory", flag, path)
	}
	return nil
}

// bundledModelName is the small model shipped in the repository's models/.
const bundledModelName = "forgepipe-tiny.f16.gguf"

// findBundledModel looks for the bundled model in models/ of the enclosing
// repository (walking up from the working directory), then next to the
// binary (in its folder, its models/ folder and ../models/).
func findBundledModel() (string, error) {
	var candidates []string
	if dir, err := os.Getwd(); err == nil {
		for {
			candidates = append(candidates, filepath.Join(dir, "models", bundledModelName))
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		candidates = append(candidates,
			filepath.Join(dir, bundledModelName),
			filepath.Join(dir, "models", bundledModelName),
			filepath.Join(dir, "..", "models", bundledModelName))
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("bundled model %s not found in models/ above the working directory or next to the binary: pass --vocab-from", bundledModelName)
}
