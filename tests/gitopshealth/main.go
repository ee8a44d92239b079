// Command gitopshealth reads Kubernetes objects as GitOps tools read them, with their own code:
//
//   - kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute), what Flux's health checks and
//     `wait`, kpt and cli-utils' appliers use: Current, InProgress, Failed, ...
//   - Argo CD's Lua health checks, run by gopher-lua (the interpreter Argo CD embeds) in a state
//     set up as Argo CD sets up one for a check from argocd-cm: no standard library but base,
//     table, package and a safe os (time, date), unless useOpenLibs; the object as the global
//     `obj`; a one-second deadline; the returned table's status and message.
//
// Two commands:
//
//	gitopshealth objects DIR < objects.json
//	    for each object (a JSON list), its kstatus result and the health that DIR's check for its
//	    group and kind (DIR/<group>/<Kind>/health.lua, Argo CD's resource_customizations layout)
//	    gives, with and without the standard libraries; one JSON list on standard output.
//	gitopshealth health-tests DIR
//	    every DIR/<group>/<Kind>/health_test.yaml, run as Argo CD's own TestLuaHealthScript runs
//	    the ones of its resource_customizations (with the standard libraries): each test's
//	    inputPath through health.lua, the result compared with its healthStatus; and the same
//	    check without them must answer too. One JSON list of results, exit 1 on a mismatch.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Health is what a health check says: Argo CD's health.HealthStatus.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

type kstatusResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type objectResult struct {
	Kind    string        `json:"kind"`
	Name    string        `json:"name"`
	Kstatus kstatusResult `json:"kstatus"`
	// Argo CD's health with the standard libraries off (its default for argocd-cm checks) and on
	// (resource.customizations.useOpenLibs.<group>_<kind>: "true").
	Argocd         *Health `json:"argocd,omitempty"`
	ArgocdOpenLibs *Health `json:"argocdOpenLibs,omitempty"`
}

// Argo CD accepts these; anything else it reports as Unknown.
var validHealth = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true,
	"Unknown": true,
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gitopshealth objects|health-tests DIR")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "objects":
		err = objects(os.Args[2], os.Stdin, os.Stdout)
	case "health-tests":
		var failed bool
		failed, err = healthTests(os.Args[2], os.Stdout)
		if err == nil && failed {
			os.Exit(1)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitopshealth:", err)
		os.Exit(2)
	}
}

func objects(dir string, in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	// As client-go decodes objects: whole numbers as int64 (kstatus reads generations so).
	var items []any
	if err := utiljson.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf("reading the objects: %w", err)
	}
	results := []objectResult{}
	for _, entry := range items {
		item, ok := entry.(map[string]any)
		if !ok {
			return fmt.Errorf("not an object: %v", entry)
		}
		obj := &unstructured.Unstructured{Object: item}
		result := objectResult{Kind: obj.GetKind(), Name: obj.GetName()}
		computed, err := status.Compute(obj)
		if err != nil {
			result.Kstatus.Error = err.Error()
		} else {
			result.Kstatus = kstatusResult{Status: computed.Status.String(), Message: computed.Message}
		}
		script, err := os.ReadFile(scriptPath(dir, obj))
		if err == nil {
			result.Argocd = run(string(script), item, false)
			result.ArgocdOpenLibs = run(string(script), item, true)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		results = append(results, result)
	}
	return json.NewEncoder(out).Encode(results)
}

func scriptPath(dir string, obj *unstructured.Unstructured) string {
	gvk := obj.GroupVersionKind()
	return filepath.Join(dir, gvk.Group, gvk.Kind, "health.lua")
}

// The layout of Argo CD's health_test.yaml.
type healthTestFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

type testResult struct {
	Test     string  `json:"test"`
	Expected Health  `json:"expected"`
	Got      *Health `json:"got"`
	// Without the standard libraries (argocd-cm's default).
	Bare *Health `json:"bare"`
	OK   bool    `json:"ok"`
}

func healthTests(dir string, out io.Writer) (bool, error) {
	results := []testResult{}
	failed := false
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() || entry.Name() != "health.lua" {
			return err
		}
		script, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		folder := filepath.Dir(path)
		raw, err := os.ReadFile(filepath.Join(folder, "health_test.yaml"))
		if err != nil {
			return fmt.Errorf("every health.lua needs its health_test.yaml: %w", err)
		}
		var file healthTestFile
		if err := yaml.UnmarshalStrict(raw, &file); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(folder, "health_test.yaml"), err)
		}
		if len(file.Tests) == 0 {
			return fmt.Errorf("%s: no tests", filepath.Join(folder, "health_test.yaml"))
		}
		relative, _ := filepath.Rel(dir, folder)
		for _, test := range file.Tests {
			input, err := os.ReadFile(filepath.Join(folder, test.InputPath))
			if err != nil {
				return err
			}
			obj := map[string]any{}
			if err := yaml.Unmarshal(input, &obj); err != nil {
				return fmt.Errorf("%s: %w", test.InputPath, err)
			}
			// As Argo CD's own test runs its checks: with the standard libraries. Ours must
			// also run without them, as argocd-cm runs a check by default.
			got := run(string(script), obj, true)
			bare := run(string(script), obj, false)
			ok := *got == test.HealthStatus && bare.Error == "" && bare.Status != "Unknown"
			failed = failed || !ok
			results = append(results, testResult{
				Test:     filepath.ToSlash(filepath.Join(relative, test.InputPath)),
				Expected: test.HealthStatus,
				Got:      got,
				Bare:     bare,
				OK:       ok,
			})
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	sort.Slice(results, func(i, j int) bool { return results[i].Test < results[j].Test })
	return failed, json.NewEncoder(out).Encode(results)
}

// run executes a health check as Argo CD's controller does (util/lua: VM.runLua and
// ExecuteHealthLua).
func run(script string, obj map[string]any, openLibs bool) *Health {
	state := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return &Health{Status: "Unknown", Error: err.Error()}
		}
	}
	state.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", decode(state, obj))
	if err := state.DoString(script); err != nil {
		// Argo CD reports a check that fails to run as an error; the resource's health is then
		// Unknown.
		return &Health{Status: "Unknown", Error: err.Error()}
	}
	returned, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return &Health{Status: "Unknown", Error: "expect table output from Lua script, not " + state.Get(-1).Type().String()}
	}
	health := &Health{
		Status:  lua.LVAsString(returned.RawGetString("status")),
		Message: lua.LVAsString(returned.RawGetString("message")),
	}
	if !validHealth[health.Status] {
		return &Health{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return health
}

// decode turns a JSON value into a Lua value, as Argo CD's decodeValue does: objects and lists
// become tables, numbers numbers.
func decode(state *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case []any:
		table := state.CreateTable(len(converted), 0)
		for _, item := range converted {
			table.Append(decode(state, item))
		}
		return table
	case map[string]any:
		table := state.CreateTable(0, len(converted))
		for key, item := range converted {
			table.RawSetH(lua.LString(key), decode(state, item))
		}
		return table
	}
	return lua.LNil
}

// The part of the os library Argo CD gives health checks (its oslib_safe.go): time and date. As
// Argo CD does, opening it registers them in the `table` module, so that a check without the
// standard libraries has no global `os` and gets one with `local os = require("os")`.

var safeOs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(state *lua.LState) int {
	state.Push(state.RegisterModule(lua.TabLibName, safeOs))
	return 1
}

func safeOsLoader(state *lua.LState) int {
	state.Push(state.SetFuncs(state.NewTable(), safeOs))
	return 1
}

func osTime(state *lua.LState) int {
	if state.GetTop() == 0 {
		state.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	table := state.CheckTable(1)
	field := func(name string, fallback int) int {
		if number, ok := table.RawGetString(name).(lua.LNumber); ok {
			return int(number)
		}
		return fallback
	}
	at := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	state.Push(lua.LNumber(at.Unix()))
	return 1
}

func osDate(state *lua.LState) int {
	at := time.Now()
	format := "%c"
	if state.GetTop() >= 1 {
		format = state.CheckString(1)
		if strings.HasPrefix(format, "!") {
			at = at.UTC()
			format = strings.TrimPrefix(format, "!")
		}
		if state.GetTop() >= 2 {
			at = time.Unix(state.CheckInt64(2), 0)
		}
	}
	if strings.HasPrefix(format, "*t") {
		table := state.NewTable()
		for name, value := range map[string]int{
			"year": at.Year(), "month": int(at.Month()), "day": at.Day(), "hour": at.Hour(),
			"min": at.Minute(), "sec": at.Second(), "wday": int(at.Weekday()) + 1, "yday": 0,
		} {
			table.RawSetString(name, lua.LNumber(value))
		}
		table.RawSetString("isdst", lua.LFalse)
		state.Push(table)
		return 1
	}
	// Our checks ask for tables only; a format string is answered in RFC 3339.
	state.Push(lua.LString(at.Format(time.RFC3339)))
	return 1
}
