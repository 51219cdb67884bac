// A widget output whose model is gone (a saved notebook reopened, the kernel restarted) shows the
// text/html its bundle carries instead of "Error displaying widget: model not found". The live widget
// still wins whenever its model exists: we wrap the ipywidgets renderer factory, we do not replace it.
import { htmlRendererFactory, IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { MessageLoop } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

export const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';
const WRAPPED = Symbol('llm-magics-fallback');

type Factory = IRenderMime.IRendererFactory & { [WRAPPED]?: true };

/** The widget model an output shows, if it is a widget output. */
function modelId(model: IRenderMime.IMimeModel | null): string | undefined {
  const view = model?.data[WIDGET_VIEW] as { model_id?: string } | undefined;
  return view?.model_id;
}

/** Whether the ipywidgets renderer drew a view (it adds the view as a child; errors are plain text). */
export function hasWidgetView(renderer: Widget): boolean {
  if (renderer.isDisposed) {
    return false; // a disposed Panel has no layout: asking for its widgets would throw
  }
  return renderer instanceof Panel ? renderer.widgets.length > 0 : renderer.node.children.length > 0;
}

/** The ipywidgets renderer, with the output's text/html shown while it has no view of a live model. */
export class FallbackRenderer extends Panel implements IRenderMime.IRenderer {
  private inner: IRenderMime.IRenderer | null = null;
  private fallback: IRenderMime.IRenderer | null = null;
  private model: IRenderMime.IMimeModel | null = null;
  private observer: MutationObserver | null = null;

  constructor(
    private options: IRenderMime.IRendererOptions,
    private factory: IRenderMime.IRendererFactory,
    private onDispose: (renderer: FallbackRenderer) => void
  ) {
    super();
    this.addClass('llm-widget-output');
  }

  get showsView(): boolean {
    return this.inner !== null && hasWidgetView(this.inner);
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const shown = modelId(this.model);
    const sameView = this.showsView && shown !== undefined && shown === modelId(model);
    this.model = model;
    const html = model.data['text/html'];
    if (typeof html === 'string') {
      if (!this.fallback) {
        this.fallback = htmlRendererFactory.createRenderer({ ...this.options, mimeType: 'text/html' });
        this.fallback.addClass('llm-widget-fallback');
        this.insertWidget(0, this.fallback);
      }
      await this.fallback.renderModel(model);
    }
    // An update of the same widget's output (its saved snapshot refreshed, display_id) keeps the live
    // view: drawing it again would drop its DOM state, and Notebook 7 logs errors while it re-renders.
    if (!sameView) {
      await this.renderInner(model);
    }
  }

  /** Render again with the factory the widget manager registered once the kernel's session was ready. */
  async useFactory(factory: IRenderMime.IRendererFactory): Promise<void> {
    this.factory = factory;
    if (this.model && !this.showsView) {
      await this.renderInner(this.model);
    }
  }

  private async renderInner(model: IRenderMime.IMimeModel): Promise<void> {
    this.observer?.disconnect();
    this.inner?.dispose();
    const inner = this.factory.createRenderer(this.options);
    this.inner = inner;
    this.addWidget(inner);
    // The ipywidgets renderer may draw later (after the manager restored its state): watch it.
    this.observer = new MutationObserver(() => this.sync());
    this.observer.observe(inner.node, { childList: true, characterData: true, subtree: false });
    this.sync();
    await inner.renderModel(model);
    this.sync();
  }

  /** Show the live view when there is one; else the fallback, without the renderer's error text. */
  private sync(): void {
    // The output area may dispose of us (a cell run again) while the inner renderer still draws.
    if (this.isDisposed || !this.inner || !this.fallback) {
      return;
    }
    if (this.showsView) {
      this.fallback.hide();
      if (this.inner.hasClass('llm-widget-pending')) {
        this.inner.removeClass('llm-widget-pending');
        this.measureAgain(this.inner);
      }
    } else {
      this.fallback.show();
      this.inner.addClass('llm-widget-pending');
    }
  }

  /** A view drawn while pending (hidden, no height) may have sized itself from that (plotly falls back to
   * 700 px): once it shows, tell it (and its children) that its size is known again. */
  private measureAgain(inner: Widget): void {
    requestAnimationFrame(() => {
      if (!inner.isDisposed) {
        MessageLoop.sendMessage(inner, Widget.ResizeMessage.UnknownSize);
      }
    });
  }

  dispose(): void {
    this.observer?.disconnect();
    this.onDispose(this);
    super.dispose();
  }
}

/** Wrap the widget renderer factory of a notebook's rendermime, now and whenever it is registered again
 * (the widget manager re-registers it when the kernel's session is ready). */
export function addWidgetFallback(rendermime: IRenderMimeRegistry): void {
  const live = new Set<FallbackRenderer>();
  const wrap = (factory: Factory): Factory => {
    if (factory[WRAPPED]) {
      return factory;
    }
    const wrapped: Factory = {
      ...factory,
      [WRAPPED]: true,
      createRenderer: options => {
        const renderer = new FallbackRenderer(options, factory, done => live.delete(done));
        live.add(renderer);
        return renderer;
      }
    };
    return wrapped;
  };
  const addFactory = rendermime.addFactory.bind(rendermime);
  rendermime.addFactory = (factory: IRenderMime.IRendererFactory, rank?: number) => {
    if (!factory.mimeTypes.includes(WIDGET_VIEW)) {
      addFactory(factory, rank);
      return;
    }
    addFactory(wrap(factory), rank);
    // Outputs drawn before (no widget manager yet) try again with the new factory.
    for (const renderer of live) {
      void renderer.useFactory(factory);
    }
  };
  const current = rendermime.getFactory(WIDGET_VIEW);
  if (current) {
    addFactory(wrap(current), rendermime.getRank(WIDGET_VIEW));
  }
}
