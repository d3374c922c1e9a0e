// A remark plugin for scripts/check-refs: counts the local links of each Markdown
// file, so that `links: N resolved, N broken` says how many links were checked.
// remark-validate-links reports only the broken ones. A link is local when
// remark-validate-links, run with `repository: false`, checks it: a relative path
// or `#anchor`; a URL with a scheme or a path from `/` is left alone by it and is
// not counted here. No imports: the plugin is loaded from scripts/, where the
// installed packages are not on node's module path.

export default function remarkCountLinks() {
  return function (tree, file) {
    let count = 0
    const visit = (node) => {
      if (typeof node.url === 'string' && node.url !== '' && !node.url.startsWith('/')) {
        try {
          new URL(node.url)
        } catch {
          count += 1
        }
      }
      for (const child of node.children || []) visit(child)
    }
    visit(tree)
    file.info(`${count} local links`, {source: 'remark-count-links', ruleId: 'local-links'})
  }
}
