#!/usr/bin/python3
"""A headless Chromium for the end-to-end tests, driven over WebDriver (Debian's
chromium, chromium-driver and python3-selenium).

The Rust harness (tests/src/browser.rs) starts this inside the server's network
namespace and sends one JSON command per line on stdin; each answer is one JSON line on
stdout: {"ok": true, "value": ...} or {"ok": false, "error": "..."}. Commands:
  {"op": "get", "url": U}
  {"op": "wait", "css": S, "timeout": T, "text": X}   wait until S exists (and its text
                                                       contains X), return its text
  {"op": "gone", "css": S, "timeout": T}              wait until S matches nothing
  {"op": "text", "css": S}                            text of S ("" when absent)
  {"op": "attr", "css": S, "name": N}
  {"op": "type", "css": S, "text": X}                 clear S and type X
  {"op": "click", "css": S}
  {"op": "accept"}                                    accept a confirm() dialog
  {"op": "js", "script": J}                           run J, return its value
  {"op": "url"}                                       the current URL
  {"op": "screenshot", "path": P}
  {"op": "quit"}
"""
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
              "--disable-background-networking", "--disable-component-update"]:
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def run(d, c):
    op = c["op"]
    css = c.get("css")
    if op == "get":
        d.get(c["url"])
        return d.current_url
    if op == "wait":
        want = c.get("text")
        deadline = time.time() + c.get("timeout", 10)
        last = None
        while time.time() < deadline:
            try:
                el = d.find_element(By.CSS_SELECTOR, css)
                last = el.text
                if want is None or want in last:
                    return last
            except (NoSuchElementException, StaleElementReferenceException):
                # Absent, or replaced by a live update between finding and reading it.
                pass
            time.sleep(0.2)
        raise TimeoutException(f"{css} {'with ' + repr(want) if want else ''} not there after {c.get('timeout', 10)} s; last text {last!r}")
    if op == "gone":
        WebDriverWait(d, c.get("timeout", 10)).until_not(
            EC.presence_of_element_located((By.CSS_SELECTOR, css)))
        return True
    if op == "text":
        for _ in range(20):
            try:
                els = d.find_elements(By.CSS_SELECTOR, css)
                return els[0].text if els else ""
            except StaleElementReferenceException:
                # Replaced by a live update while being read: read the new one.
                time.sleep(0.1)
        raise TimeoutException(f"{css} kept being replaced while read")
    if op == "attr":
        return d.find_element(By.CSS_SELECTOR, css).get_attribute(c["name"])
    if op == "type":
        el = d.find_element(By.CSS_SELECTOR, css)
        el.clear()
        el.send_keys(c["text"])
        return True
    if op == "click":
        d.find_element(By.CSS_SELECTOR, css).click()
        return True
    if op == "accept":
        WebDriverWait(d, c.get("timeout", 5)).until(EC.alert_is_present())
        d.switch_to.alert.accept()
        return True
    if op == "js":
        return d.execute_script(c["script"])
    if op == "url":
        return d.current_url
    if op == "screenshot":
        return d.save_screenshot(c["path"])
    raise ValueError(f"unknown op {op}")


def main():
    d = browser()
    print(json.dumps({"ok": True, "value": d.capabilities.get("browserVersion")}), flush=True)
    try:
        for line in sys.stdin:
            c = json.loads(line)
            if c["op"] == "quit":
                break
            try:
                print(json.dumps({"ok": True, "value": run(d, c)}), flush=True)
            except Exception as e:  # every failure is an answer, never a hang
                print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}".strip()}), flush=True)
    finally:
        d.quit()


if __name__ == "__main__":
    main()
