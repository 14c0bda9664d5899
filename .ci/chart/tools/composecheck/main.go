// Command composecheck validates a compose file offline (see go.mod).
//
//	composecheck docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck docker-compose.yml")
		os.Exit(2)
	}
	if err := check(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
}

func check(file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions([]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv,
		cli.WithName("hubnode"),
		cli.WithConsistency(true), // depends_on, networks and volumes must exist
	)
	if err != nil {
		return err
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	names := p.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		s := p.Services[name]
		var deps []string
		for d, c := range s.DependsOn {
			deps = append(deps, d+":"+c.Condition)
		}
		sort.Strings(deps)
		hc := "none"
		if s.HealthCheck != nil && !s.HealthCheck.Disable {
			hc = strings.Join(s.HealthCheck.Test, " ")
		}
		fmt.Printf("  %-10s image=%s healthcheck=[%s] depends_on=%v\n", name, s.Image, hc, deps)
		if err := checkService(s); err != nil {
			return fmt.Errorf("service %s: %w", name, err)
		}
	}
	fmt.Printf("compose-go: %s: %d services, ok\n", filepath.Base(abs), len(names))
	return nil
}

// checkService enforces what the project's compose file promises beyond the
// specification: every long-running service has a health check, and waits
// for what it depends on to be healthy.
func checkService(s types.ServiceConfig) error {
	if s.HealthCheck == nil || s.HealthCheck.Disable {
		return fmt.Errorf("no healthcheck")
	}
	for d, c := range s.DependsOn {
		if c.Condition != types.ServiceConditionHealthy {
			return fmt.Errorf("depends_on %s: condition %q, want %q", d, c.Condition, types.ServiceConditionHealthy)
		}
	}
	return nil
}
